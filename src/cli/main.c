/* main.c — the fmtrain program (fm_main, see cli.h): dispatches subcommands, owns MPI
 * initialisation and finalisation, and is the only place that turns an error status into an exit
 * code or MPI_Abort. The executable's entry point is src/cli/fmtrain.c; test executables call
 * fm_main with test hooks (tests/train/fmtrain_faults.c). */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/version.h"
#include "core/status.h"
#include "core/util.h"
#include "dist/comm.h"

static const char *exit_code_text =
    "Exit codes:\n"
    "  0   success (for train: training finished)\n"
    "  1   runtime failure (I/O such as a full disk, MPI, device, memory); a restart may succeed\n"
    "  2   usage or configuration error; fix the command line or parameter file (also: a run\n"
    "      directory that cannot be written, or that another fmtrain is using)\n"
    "  3   input error: a dataset or checkpoint file is missing, foreign or damaged\n"
    "  4   training diverged (NaN/Inf loss or gradient norm) with [train] on_nan = stop\n"
    "  75  stopped cleanly on a signal or before the wall-time limit, or by the hang watchdog;\n"
    "      resumable\n";

static void print_general_help(FILE *out)
{
    fprintf(out,
            "fmtrain %s — train transformer language models on supercomputers\n\n"
            "Usage: fmtrain COMMAND [ARGS...]\n"
            "       fmtrain help [COMMAND]\n"
            "       fmtrain --version\n\n"
            "Commands:\n",
            fm_version_string());
    for (int i = 0; fm_commands[i]; i++)
        fprintf(out, "  %-10s %s\n", fm_commands[i]->name, fm_commands[i]->summary);
    fprintf(out, "  %-10s %s\n", "help", "show this help, or a command's help");
    fprintf(out, "\n%s\nDocumentation: docs/ in the source tree or share/doc/fmtrain when installed.\n",
            exit_code_text);
}

/* The command whose name is closest to `name` (edit distance below 3), or NULL. */
static const char *closest_command(const char *name)
{
    const char *best = NULL;
    int bestd = 3;
    for (int i = 0; fm_commands[i]; i++) {
        int d = fm_util_edit_distance(name, fm_commands[i]->name, 3);
        if (d < bestd) {
            bestd = d;
            best = fm_commands[i]->name;
        }
    }
    return best;
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 3) {
        print_general_help(stdout);
        return FM_EXIT_OK;
    }
    const fm_command *c = fm_command_find(argv[2]);
    if (!c) {
        const char *best = closest_command(argv[2]);
        if (best)
            fprintf(stderr, "fmtrain: usage error: no command '%s' (did you mean '%s'?)\n", argv[2],
                    best);
        else
            fprintf(stderr,
                    "fmtrain: usage error: no command '%s'; commands are listed by 'fmtrain help'\n",
                    argv[2]);
        return FM_EXIT_USAGE;
    }
    fputs(c->help, stdout);
    fprintf(stdout, "\n%s", exit_code_text);
    return FM_EXIT_OK;
}

static int wants_help(int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    }
    return 0;
}

/* What needs no command: no arguments, --version, help. Returns the exit code, or -1 when argv[1]
 * names something else. */
static int run_builtin(int argc, char **argv)
{
    if (argc < 2) {
        print_general_help(stderr);
        return FM_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        fm_version_print(stdout);
        return FM_EXIT_OK;
    }
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        return cmd_help(argc, argv);
    return -1;
}

/* An unknown command: a usage error naming the closest one. */
static int unknown_command(const char *name)
{
    const char *best = closest_command(name);
    if (best)
        fprintf(stderr, "fmtrain: usage error: unknown command '%s' (did you mean '%s'?)\n", name,
                best);
    else
        fprintf(stderr, "fmtrain: usage error: unknown command '%s'; see 'fmtrain help'\n", name);
    return FM_EXIT_USAGE;
}

/* MPI_Init_thread, then this process's place in MPI_COMM_WORLD. Every return code is checked:
 * MPI_Init_thread's by hand (before MPI is initialised MPI_Error_string, which FM_MPI_TRY uses, may
 * not be called), the others through FM_MPI_TRY. (MPI_COMM_WORLD keeps MPI's default handler, which
 * aborts on most errors; the checks cover the errors that return.) */
static fm_status start_mpi(int *argc, char ***argv, fm_cmd_env *env)
{
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return FM_ERR(FM_ERR_MPI, "MPI_Init_thread failed");
    env->mpi_initialized = 1;
    FM_MPI_TRY(MPI_Comm_rank(MPI_COMM_WORLD, &env->world_rank));
    FM_MPI_TRY(MPI_Comm_size(MPI_COMM_WORLD, &env->world_size));
    return NULL;
}

/* Whether HDF5 still has a file open after the command: only when closing one failed (a checkpoint
 * whose file system filled up under the writer; every command closes what it opens). HDF5 then
 * holds the file half-closed, and closing it again at MPI_Finalize (HDF5 closes its files from an
 * attribute of MPI_COMM_SELF) or at exit (its atexit handler) crashes with SIGSEGV. */
static int hdf5_file_left_open(void)
{
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_FILE);
    return n > 0;
}

/* Prints a command's error and ends the process's MPI: a collective error is reported once (rank
 * 0) and every rank finalises; a rank-local error on several ranks ends the job with MPI_Abort
 * (the other ranks may wait in a collective forever), except a clean stop; a process whose HDF5
 * state is broken (hdf5_file_left_open) ends with _exit and the code. Returns the exit code. */
static int finish(fm_status st, const fm_cmd_env *env)
{
    int code = fm_status_exit_code(st);
    if (st) {
        if (!fm_status_is_collective(st) || env->world_rank == 0)
            fm_status_print(st, stderr, fm_status_code(st) == FM_ERR_INTERNAL);
        if (env->mpi_initialized && env->world_size > 1 && !fm_status_is_collective(st) &&
            fm_status_code(st) != FM_ERR_STOPPED) {
            fflush(stderr);
            fm_status_free(&st);
            int rc = MPI_Abort(MPI_COMM_WORLD, code);
            /* MPI_Abort does not return when it works. */
            fprintf(stderr,
                    "fmtrain: MPI_Abort returned %d (it should not return); exiting with %d\n", rc,
                    code);
            return code;
        }
        fm_status_free(&st);
    }
    if (env->mpi_initialized && code != FM_EXIT_OK && hdf5_file_left_open()) {
        fprintf(stderr, "fmtrain: an HDF5 file could not be closed after the error above; ending "
                        "without MPI_Finalize (which would crash closing it again), exit code %d\n",
                code);
        fflush(stdout);
        fflush(stderr);
        _exit(code);
    }
    if (env->mpi_initialized && MPI_Finalize() != MPI_SUCCESS) {
        /* After MPI_Finalize MPI_Error_string may not be called: no status text. */
        fprintf(stderr, "fmtrain: MPI error: MPI_Finalize failed\n");
        if (code == FM_EXIT_OK) code = FM_EXIT_FAILURE;
    }
    return code;
}

/* The hang watchdog's way out (fm_cmd_env.exit_now, train/watchdog.h). It runs on the watchdog's
 * thread while the main thread is stuck, possibly inside MPI, HDF5 or stdio: no MPI call (MPI runs
 * MPI_THREAD_FUNNELED, and a stuck collective is what we are leaving), no stdio (the stuck thread
 * may hold its locks; the watchdog has written its report with write(2)), no atexit handlers
 * (HDF5's would close files collectively and block again). Every rank's own watchdog ends its own
 * process, so no rank waits for a peer; the launcher sees exit code `code` (75: requeue). */
static void exit_now(int code)
{
    _exit(code);
}

int fm_main(int argc, char **argv, const fm_main_hooks *hooks)
{
    int code = run_builtin(argc, argv);
    if (code >= 0) return code;
    const fm_command *cmd = fm_command_find(argv[1]);
    if (!cmd) return unknown_command(argv[1]);
    if (wants_help(argc, argv)) {
        fputs(cmd->help, stdout);
        return FM_EXIT_OK;
    }
    fm_cmd_env env = {0, 0, 1, isatty(STDOUT_FILENO), isatty(STDERR_FILENO), hooks, exit_now};
    fm_status st = cmd->needs_mpi ? start_mpi(&argc, &argv, &env) : NULL;
    if (!st) st = cmd->run(argc - 1, argv + 1, &env);
    return finish(st, &env);
}
