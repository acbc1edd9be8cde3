# mg_deps.m4 - libmegalodon's own configure checks.

# MG_REQUIRE_LIB(DESCRIPTION, HEADER, FUNCTION, LIBRARY, DEBIAN-PACKAGE, VARIABLE)
# ---------------------------------------------------------------------------
# Require HEADER and FUNCTION from -lLIBRARY; append -lLIBRARY to VARIABLE (AC_SUBSTed).
# Stop with a message naming the Debian package when either is missing.
AC_DEFUN([MG_REQUIRE_LIB], [
  AC_CHECK_HEADER([$2], [],
    [AC_MSG_ERROR([$1: header $2 not found. Install the Debian package $5 (tools/install-deps.sh does).])])
  mg_save_LIBS=$LIBS
  LIBS=""
  AC_SEARCH_LIBS([$3], [$4], [],
    [AC_MSG_ERROR([$1: function $3 not found in -l$4. Install the Debian package $5 (tools/install-deps.sh does).])])
  AS_CASE([" $$6 "], [*" $LIBS "*], [], [$6="$$6 $LIBS"])
  LIBS=$mg_save_LIBS
  AC_SUBST([$6])
])

# MG_CHECK_PTHREAD
# ----------------
# POSIX threads through -pthread; sets PTHREAD_CFLAGS and PTHREAD_LIBS.
AC_DEFUN([MG_CHECK_PTHREAD], [
  AC_MSG_CHECKING([whether $CC accepts -pthread])
  mg_save_CFLAGS=$CFLAGS
  mg_save_LIBS=$LIBS
  CFLAGS="$CFLAGS -pthread"
  LIBS="$LIBS -pthread"
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>
static void *f(void *p) { return p; }]],
                                  [[pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0);]])],
    [AC_MSG_RESULT([yes]); PTHREAD_CFLAGS=-pthread; PTHREAD_LIBS=-pthread],
    [AC_MSG_RESULT([no])
     AC_MSG_ERROR([POSIX threads (-pthread) are required. Install the Debian package libc6-dev.])])
  CFLAGS=$mg_save_CFLAGS
  LIBS=$mg_save_LIBS
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])

# MG_CHECK_OPENMP
# ---------------
# OpenMP is required; sets OPENMP_CFLAGS.
AC_DEFUN([MG_CHECK_OPENMP], [
  AC_OPENMP
  AS_IF([test "x$ac_cv_prog_c_openmp" = "xunsupported" || test "x$ac_cv_prog_c_openmp" = "x"],
    [AC_MSG_ERROR([OpenMP is required. With gcc it comes with the Debian package libgomp1 (part of gcc); with clang install libomp-dev.])])
  AS_IF([test "x$OPENMP_CFLAGS" = "x"], [OPENMP_CFLAGS="none needed"; mg_omp_flags=""], [mg_omp_flags=$OPENMP_CFLAGS])
  AC_SUBST([MG_OPENMP_CFLAGS], [$mg_omp_flags])
])

# MG_ENABLE_SANITIZERS
# --------------------
# --enable-sanitizers builds everything with -fsanitize=address,undefined.
AC_DEFUN([MG_ENABLE_SANITIZERS], [
  AC_ARG_ENABLE([sanitizers],
    [AS_HELP_STRING([--enable-sanitizers], [build with -fsanitize=address,undefined (for testing)])],
    [], [enable_sanitizers=no])
  mg_sanitizers=no
  AS_IF([test "x$enable_sanitizers" = xyes], [
    SANITIZER_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    mg_sanitizers="address,undefined"
  ])
  AC_SUBST([SANITIZER_FLAGS])
])
