#!/bin/sh
# npm's prepare: the development build (with source maps, tests included). npm pack runs it after
# prepack, where it would overwrite the published build with maps that point at unshipped sources.
case "${npm_command:-}" in
  pack|publish) exit 0 ;;
esac
exec tsc -p "$(dirname "$0")/../tsconfig.json"
