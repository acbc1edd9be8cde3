#!/bin/sh
# installcheck-example - build the README's example program against the INSTALLED library
# with pkg-config, exactly as the README shows, and run it.
# Environment: PKG_CONFIG_PATH (to the installed megalodon.pc), MG_PREFIX_DESTDIR (a staging
# DESTDIR, if any), MG_TOP_SRCDIR, MG_MODEL.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$MG_TOP_SRCDIR/examples/simple.c" "$tmp/simple.c"
cd "$tmp"
if [ -n "${MG_PREFIX_DESTDIR:-}" ]; then
  PKG_CONFIG_SYSROOT_DIR=$MG_PREFIX_DESTDIR
  export PKG_CONFIG_SYSROOT_DIR
fi
libdir=$(pkg-config --variable=libdir megalodon)
[ -n "${MG_PREFIX_DESTDIR:-}" ] && libdir="$MG_PREFIX_DESTDIR$libdir"
# the README's command:
cc simple.c -o simple $(pkg-config --cflags --libs megalodon)
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ./simple "$MG_MODEL" | tee out.txt
grep -Eq '^generated:( [0-9]+){8}$' out.txt
echo "installcheck: README example built with pkg-config against the installed library: ok"
