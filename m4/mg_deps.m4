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

# MG_CHECK_CFLAGS(FLAGS, ACTION-IF-OK, ACTION-IF-NOT)
# ---------------------------------------------------
# Whether $CC compiles a program with FLAGS (added to CFLAGS for the test only).
AC_DEFUN([MG_CHECK_CFLAGS], [
  AC_MSG_CHECKING([whether $CC accepts $1])
  mg_save_CFLAGS=$CFLAGS
  CFLAGS="$CFLAGS $1"
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[]], [[]])],
    [AC_MSG_RESULT([yes]); $2], [AC_MSG_RESULT([no]); $3])
  CFLAGS=$mg_save_CFLAGS
])

# MG_SIMD
# -------
# The kernel tables of simd/: each is compiled with its own flags into the one library and
# chosen at run time after a CPU check. --enable-avx2, --enable-avx512, --enable-neon
# (default: on when the compiler supports them for this host).
AC_DEFUN([MG_SIMD], [
  AC_REQUIRE([AC_CANONICAL_HOST])
  AC_ARG_ENABLE([avx2],
    [AS_HELP_STRING([--enable-avx2], [build the AVX2+FMA kernel table (default: if supported)])],
    [], [enable_avx2=auto])
  AC_ARG_ENABLE([avx512],
    [AS_HELP_STRING([--enable-avx512], [build the AVX-512 kernel table (default: if supported)])],
    [], [enable_avx512=auto])
  AC_ARG_ENABLE([neon],
    [AS_HELP_STRING([--enable-neon], [build the NEON kernel table (default: on AArch64)])],
    [], [enable_neon=auto])
  AC_SUBST([AVX2_CFLAGS], ["-mavx2 -mfma -mf16c"])
  AC_SUBST([AVX512_CFLAGS], ["-mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c"])
  mg_isas=""
  mg_x86=no
  AS_CASE([$host_cpu], [x86_64|i?86], [mg_x86=yes])
  mg_avx2=no
  AS_IF([test "x$enable_avx2" != xno && test $mg_x86 = yes],
        [MG_CHECK_CFLAGS([$AVX2_CFLAGS], [mg_avx2=yes])])
  AS_IF([test "x$enable_avx2" = xyes && test $mg_avx2 = no],
        [AC_MSG_ERROR([--enable-avx2: $CC cannot compile for AVX2 on $host_cpu])])
  mg_avx512=no
  AS_IF([test "x$enable_avx512" != xno && test $mg_x86 = yes],
        [MG_CHECK_CFLAGS([$AVX512_CFLAGS], [mg_avx512=yes])])
  AS_IF([test "x$enable_avx512" = xyes && test $mg_avx512 = no],
        [AC_MSG_ERROR([--enable-avx512: $CC cannot compile for AVX-512 on $host_cpu])])
  mg_neon=no
  AS_IF([test "x$enable_neon" != xno && test "x$host_cpu" = xaarch64], [mg_neon=yes])
  AS_IF([test "x$enable_neon" = xyes && test $mg_neon = no],
        [AC_MSG_ERROR([--enable-neon: NEON kernels are built for AArch64 hosts only])])
  AS_IF([test $mg_avx512 = yes], [AC_DEFINE([MG_HAVE_AVX512], [1], [AVX-512 table built]) mg_isas="$mg_isas avx512"])
  AS_IF([test $mg_avx2 = yes], [AC_DEFINE([MG_HAVE_AVX2], [1], [AVX2 table built]) mg_isas="$mg_isas avx2"])
  AS_IF([test $mg_neon = yes], [AC_DEFINE([MG_HAVE_NEON], [1], [NEON table built]) mg_isas="$mg_isas neon"])
  mg_isas="${mg_isas# } scalar (chosen at run time; MEGALODON_ISA overrides)"
  AM_CONDITIONAL([MG_AVX2], [test $mg_avx2 = yes])
  AM_CONDITIONAL([MG_AVX512], [test $mg_avx512 = yes])
  AM_CONDITIONAL([MG_NEON], [test $mg_neon = yes])
])

# MG_FIND_PYTHON
# --------------
# MG_PYTHON: a python3 that imports torch and gguf ($srcdir/.venv first, then PATH, then
# /usr/bin/python3); MG_PYTHON_TORCH: one that imports torch (Debian's python3-torch).
AC_DEFUN([MG_FIND_PYTHON], [
  AC_ARG_VAR([MG_PYTHON], [python3 with torch and gguf (for megalodon-convert tests)])
  AC_MSG_CHECKING([for python3 with torch and gguf])
  AS_IF([test "x$MG_PYTHON" = x], [
    for mg_py in "$srcdir/.venv/bin/python3" "`command -v python3`" /usr/bin/python3; do
      AS_IF([test -n "$mg_py" && test -x "$mg_py" && "$mg_py" -c 'import torch, gguf' >/dev/null 2>&1],
            [MG_PYTHON=$(cd "$(dirname "$mg_py")" && pwd)/$(basename "$mg_py"); break])
    done])
  AC_MSG_RESULT([${MG_PYTHON:-no (megalodon-convert tests will be skipped; run tools/install-deps.sh)}])
  AC_MSG_CHECKING([for python3 with torch])
  MG_PYTHON_TORCH=""
  for mg_py in "$MG_PYTHON" /usr/bin/python3 "`command -v python3`"; do
    AS_IF([test -n "$mg_py" && test -x "$mg_py" && "$mg_py" -c 'import torch' >/dev/null 2>&1],
          [MG_PYTHON_TORCH=$mg_py; break])
  done
  AC_MSG_RESULT([${MG_PYTHON_TORCH:-no}])
  AC_SUBST([MG_PYTHON])
  AC_SUBST([MG_PYTHON_TORCH])
])

# MG_OPENCL
# ---------
# The OpenCL backend (opencl/, docs/opencl.md): --enable-opencl=auto|yes|no (default auto: on
# when CL/cl.h and an ICD loader (-lOpenCL) are found; Debian: ocl-icd-opencl-dev
# opencl-c-headers). With it, CLBlast (clblast_c.h, -lclblast; Debian libclblast-dev) is used
# when found (--without-clblast: never). Sets OPENCL_LIBS, MG_HAVE_OPENCL, MG_HAVE_CLBLAST
# and the conditional MG_OPENCL; mg_opencl is the summary line.
AC_DEFUN([MG_OPENCL], [
  AC_ARG_ENABLE([opencl],
    [AS_HELP_STRING([--enable-opencl], [build the OpenCL backend (default: auto, when headers and an ICD loader are found)])],
    [], [enable_opencl=auto])
  AC_ARG_WITH([clblast],
    [AS_HELP_STRING([--without-clblast], [do not use CLBlast in the OpenCL backend (default: use it when found)])],
    [], [with_clblast=auto])
  mg_opencl=no
  mg_ocl_built=no
  OPENCL_LIBS=""
  AS_IF([test "x$enable_opencl" != xno], [
    mg_ocl_ok=yes
    AC_CHECK_HEADER([CL/cl.h], [], [mg_ocl_ok=no], [[#define CL_TARGET_OPENCL_VERSION 120]])
    mg_save_LIBS=$LIBS
    LIBS=""
    AS_IF([test $mg_ocl_ok = yes],
      [AC_SEARCH_LIBS([clGetPlatformIDs], [OpenCL], [OPENCL_LIBS=$LIBS], [mg_ocl_ok=no])])
    LIBS=$mg_save_LIBS
    AS_IF([test $mg_ocl_ok = no && test "x$enable_opencl" = xyes],
      [AC_MSG_ERROR([--enable-opencl: CL/cl.h or the OpenCL ICD loader (-lOpenCL) not found. Install the Debian packages ocl-icd-opencl-dev and opencl-c-headers (tools/install-deps.sh does).])])
    AS_IF([test $mg_ocl_ok = yes], [
      mg_ocl_built=yes
      mg_opencl="yes ($OPENCL_LIBS; kernels embedded, devices chosen at run time)"
      AC_DEFINE([MG_HAVE_OPENCL], [1], [OpenCL backend built])
      AS_IF([test "x$with_clblast" != xno], [
        mg_clblast_ok=yes
        AC_CHECK_HEADER([clblast_c.h], [], [mg_clblast_ok=no], [[#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>]])
        mg_save_LIBS=$LIBS
        LIBS="$OPENCL_LIBS"
        AS_IF([test $mg_clblast_ok = yes],
          [AC_SEARCH_LIBS([CLBlastSgemm], [clblast], [OPENCL_LIBS=$LIBS], [mg_clblast_ok=no])])
        LIBS=$mg_save_LIBS
        AS_IF([test $mg_clblast_ok = no && test "x$with_clblast" = xyes],
          [AC_MSG_ERROR([--with-clblast: CLBlast not found. Install the Debian package libclblast-dev.])])
        AS_IF([test $mg_clblast_ok = yes], [
          AC_DEFINE([MG_HAVE_CLBLAST], [1], [CLBlast available to the OpenCL backend])
          mg_opencl="$mg_opencl, CLBlast"])
      ])
    ], [mg_opencl="no (CL/cl.h or -lOpenCL not found: Debian ocl-icd-opencl-dev opencl-c-headers)"])
  ])
  AS_IF([test "x$enable_opencl" = xno], [mg_opencl="no (--disable-opencl)"])
  AC_SUBST([OPENCL_LIBS])
  AM_CONDITIONAL([MG_OPENCL], [test $mg_ocl_built = yes])
])
