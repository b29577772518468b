/**
 * Option parsing for commands that run another command (`corral run`): options come first, and the
 * first word that is not an option (or everything after `--`) is the command with its own options,
 * as with env(1), sudo and docker run. So `corral run ls -la` runs `ls -la`.
 * A string option always takes the next word as its value, even one starting with '-'
 * (`--kill-timeout -1` is refused for its value, not as an "ambiguous argument").
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { UsageError, usageFromParseArgs } from './errors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
}

export type OptionTable = Record<string, OptionSpec>;

/** Splits argv into corral's options (each as `--name=value` or `--name`) and the command words. */
export function splitCommand(argv: readonly string[], options: OptionTable, cmdName: string): { options: string[]; command: string[] } {
  const shorts = new Map(Object.entries(options).filter(([, o]) => o.short).map(([k, o]) => [o.short!, k]));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === '--') return { options: out, command: argv.slice(i + 1) };
    if (tok.startsWith('--')) {
      const eq = tok.indexOf('=');
      const name = tok.slice(2, eq < 0 ? undefined : eq);
      const spec = options[name];
      if (!spec) throw new UsageError(`unknown option --${name} for corral ${cmdName} (the command starts at the first word that is not an option, or after --)`);
      if (spec.type === 'string' && eq < 0) {
        if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value`);
        out.push(`--${name}=${argv[++i]!}`);
      } else {
        out.push(tok);
      }
      continue;
    }
    if (tok.startsWith('-') && tok.length > 1) {
      // Short flags: only booleans (-t, -h), possibly grouped (-th).
      for (const ch of tok.slice(1)) {
        const name = shorts.get(ch);
        if (!name) throw new UsageError(`unknown option -${ch} for corral ${cmdName} (the command starts at the first word that is not an option, or after --)`);
        if (options[name]!.type !== 'boolean') throw new UsageError(`-${ch} needs a value: use --${name} VALUE`);
        out.push(`--${name}`);
      }
      continue;
    }
    return { options: out, command: argv.slice(i) };
  }
  return { options: out, command: [] };
}

/** parseArgs over the options part, with its errors as UsageErrors. */
export function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(tokens: string[], options: T): ReturnType<typeof parseArgs<{ options: T; strict: true; allowPositionals: false }>>['values'] {
  try {
    return parseArgs({ args: tokens, options, allowPositionals: false, strict: true }).values;
  } catch (err) {
    return usageFromParseArgs(err);
  }
}

const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;
type WithHelp<T> = T & typeof HELP_OPTION;
type Parsed<T extends NonNullable<ParseArgsConfig['options']>> = ReturnType<typeof parseArgs<{ options: WithHelp<T>; strict: true; allowPositionals: true }>>;

/**
 * The start every command other than `run` shares: its options parsed (plus -h/--help; a parse
 * error is a UsageError), and --help answered. Returns undefined when the help was printed (the
 * command then exits 0). Positionals are refused unless `positionals` says the command takes them.
 */
export function parseCommand<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[], options: T, help: string, io: { stdout: NodeJS.WritableStream }, opts: { positionals?: boolean } = {},
): Parsed<T> | undefined {
  let parsed: Parsed<T>;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, ...HELP_OPTION } as WithHelp<T>, strict: true, allowPositionals: true });
  } catch (err) {
    return usageFromParseArgs(err);
  }
  if ((parsed.values as { help?: boolean }).help) {
    io.stdout.write(help);
    return undefined;
  }
  if (!opts.positionals && parsed.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
  return parsed;
}
