/* status.h — fmtrain's one error convention.
 *
 * Every fallible library function returns an `fm_status`: NULL means success, anything else is a
 * heap-allocated error that carries a code (what kind of failure, which decides the process exit
 * code), a message for the user (which file, which line, what was expected) and a traceback of
 * file:line:function frames added as the error travels up through FM_TRY.
 *
 * Ownership: whoever receives a non-NULL status owns it and must either return it upwards (FM_TRY,
 * fm_status_trace) or release it with fm_status_free(). Only `main` turns a status into an exit
 * code or MPI_Abort; library code never calls exit(). Under MPI, an error seen by some ranks only is
 * shared with the others by fm_comm_agree (src/dist/comm.h), which makes it collective; `main`
 * aborts only for an error that stayed rank-local.
 *
 * There is no global error state: a status is an ordinary value, so threads and ranks never share one.
 */
#ifndef FM_STATUS_H
#define FM_STATUS_H

#include <stdarg.h>
#include <stdio.h>

/* Error classes. Each maps to one documented process exit code (fm_status_exit_code). */
typedef enum fm_code {
    FM_OK = 0,
    FM_ERR_USAGE,    /* bad command line                                  -> exit 2 */
    FM_ERR_CONFIG,   /* bad parameter file or --set value                 -> exit 2 */
    FM_ERR_INPUT,    /* bad or damaged input file (dataset, checkpoint)   -> exit 3 */
    FM_ERR_IO,       /* file system or I/O failure (disk full, EIO, ...)  -> exit 1 */
    FM_ERR_NOMEM,    /* allocation failed                                 -> exit 1 */
    FM_ERR_MPI,      /* MPI call failed                                   -> exit 1 */
    FM_ERR_DEVICE,   /* CUDA / NCCL / backend failure                     -> exit 1 */
    FM_ERR_NUMERIC,  /* NaN or Inf loss / gradient norm with on_nan=stop  -> exit 4 */
    FM_ERR_INTERNAL, /* a bug in fmtrain                                  -> exit 1 */
    FM_ERR_STOPPED   /* stopped on request (signal, wall time); resumable -> exit 75 */
} fm_code;

/* Process exit codes, documented in `fmtrain help` and docs/cli.md. */
enum {
    FM_EXIT_OK = 0,       /* finished what was asked */
    FM_EXIT_FAILURE = 1,  /* runtime failure (I/O, MPI, device, memory, bug): a restart may help */
    FM_EXIT_USAGE = 2,    /* command line or configuration error: fix the input, do not retry */
    FM_EXIT_INPUT = 3,    /* dataset or checkpoint file is missing, foreign or damaged */
    FM_EXIT_NUMERIC = 4,  /* training diverged (NaN/Inf) and on_nan = stop */
    FM_EXIT_STOPPED = 75  /* stopped cleanly on a signal or before the wall-time limit: resumable
                             (75 = EX_TEMPFAIL in sysexits.h) */
};

typedef struct fm_status_s *fm_status;

/* Creates an error. Use the FM_ERR macro, which fills file/line/func. printf-style message.
 * Never returns NULL (if memory is exhausted a static out-of-memory status is returned, which
 * fm_status_free ignores). */
fm_status fm_status_new(fm_code code, const char *file, int line, const char *func,
                        const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
fm_status fm_status_vnew(fm_code code, const char *file, int line, const char *func,
                         const char *fmt, va_list ap);

/* Appends a traceback frame and returns `st` (NULL stays NULL). */
fm_status fm_status_trace(fm_status st, const char *file, int line, const char *func);

/* Prepends context to the message: "while loading x.h5: <old message>". Returns `st`. */
fm_status fm_status_prefix(fm_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

fm_code fm_status_code(fm_status st);        /* FM_OK for NULL */
const char *fm_status_message(fm_status st); /* "" for NULL; owned by st */
int fm_status_exit_code(fm_status st);       /* FM_EXIT_* for this status */
const char *fm_code_name(fm_code code);      /* "config error", "I/O error", ... */

/* Marks `st` as collective: every rank of the communicator returns the same error (for example a
 * configuration error found by all ranks), so `main` may finalize MPI and exit instead of aborting.
 * Returns st. */
fm_status fm_status_collective(fm_status st);
int fm_status_is_collective(fm_status st);

/* Prints "fmtrain: <class>: <message>" and, when `traceback` is non-zero, the frames. */
void fm_status_print(fm_status st, FILE *out, int traceback);

/* Frees st and sets *st to NULL; safe on NULL. */
void fm_status_free(fm_status *st);

/* ---- call macros ------------------------------------------------------------------------- */

#define FM_ERR(code, ...) fm_status_new((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* Evaluate a call returning fm_status; on error add this frame and return it. */
#define FM_TRY(expr)                                                                     \
    do {                                                                                 \
        fm_status fm_try_st_ = (expr);                                                   \
        if (fm_try_st_) return fm_status_trace(fm_try_st_, __FILE__, __LINE__, __func__); \
    } while (0)

/* Evaluate a call returning fm_status; on error store it (with this frame) in `st` and goto `label`
 * so the function can release what it holds. `st` must be an fm_status variable initialised NULL. */
#define FM_TRY_GOTO(st, label, expr)                                          \
    do {                                                                      \
        (st) = (expr);                                                        \
        if (st) {                                                             \
            (st) = fm_status_trace((st), __FILE__, __LINE__, __func__);       \
            goto label;                                                       \
        }                                                                     \
    } while (0)

/* Allocation helper: returns FM_ERR_NOMEM with the size when malloc fails. */
#define FM_CHECK_ALLOC(ptr, bytes)                                                         \
    do {                                                                                   \
        if (!(ptr))                                                                        \
            return FM_ERR(FM_ERR_NOMEM, "out of memory allocating %zu bytes", (size_t)(bytes)); \
    } while (0)

#endif /* FM_STATUS_H */
