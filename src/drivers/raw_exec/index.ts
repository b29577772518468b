export { RawExecDriver, RAW_EXEC, type RawExecDriverOptions, type RecoverAllResult } from './driver.js';
export type { RawExecPluginConfig, RawExecTaskConfig } from './config.js';
export type { RawExecDriverState } from './task.js';
export { parseIdRanges, lookupUser, type UserInfo } from './users.js';
export { envMatcher } from './env.js';
