/* common.cl - what every kernel file shares (the files are concatenated in the order of
 * OPENCL_KERNELS in Makefile.am and built as one program).
 *
 * Build options set by the host (backend-opencl.c: setup):
 *   MG_ACC_DOUBLE  1: accumulate norm moments and statistics in double (cl_khr_fp64), as the
 *                  scalar CPU reference does; 0: in float (devices without fp64)
 *   MG_W_HALF      1: matrix weights are stored as fp16 (read with vload_half, which is core
 *                  OpenCL 1.2 and needs no cl_khr_fp16); 0: fp32
 * Activations are fp32, row-major, as in lib/backend.h. Global sizes are rounded up to a
 * multiple of the work-group size, so every kernel checks its bounds. */
#if MG_ACC_DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
#else
typedef float acc_t;
#endif

#if MG_W_HALF
typedef half wtype;
#define LOADW(p, i) vload_half((i), (p))
#else
typedef float wtype;
#define LOADW(p, i) ((p)[(i)])
#endif

/* Tree reduction of buf[0 .. ls) (ls a power of two) into buf[0]; all work-items of the
 * group must call it. Ends with a barrier, so buf[0] may be read right after. */
#define REDUCE_SUM(buf, lid, ls)                                                           \
    do {                                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                                      \
        for (int s_ = (ls) >> 1; s_ > 0; s_ >>= 1) {                                       \
            if ((lid) < s_) (buf)[(lid)] += (buf)[(lid) + s_];                             \
            barrier(CLK_LOCAL_MEM_FENCE);                                                  \
        }                                                                                  \
    } while (0)
#define REDUCE_MAX(buf, lid, ls)                                                           \
    do {                                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                                      \
        for (int s_ = (ls) >> 1; s_ > 0; s_ >>= 1) {                                       \
            if ((lid) < s_) (buf)[(lid)] = fmax((buf)[(lid)], (buf)[(lid) + s_]);          \
            barrier(CLK_LOCAL_MEM_FENCE);                                                  \
        }                                                                                  \
    } while (0)

/* A kernel that does nothing: the host builds the program, then runs it once to check that
 * the device really executes code (and to fail early and clearly when it does not). */
__kernel void mg_probe(__global float *x) { if (get_global_id(0) == 0) x[0] = 1.0f; }
