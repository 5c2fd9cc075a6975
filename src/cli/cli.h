/* cli.h — the command table and a small option parser shared by every subcommand.
 *
 * Each subcommand lives in its own file src/cli/cmd_<name>.c and exports one `const fm_command`;
 * src/cli/commands.c lists them. The program, fm_main (src/cli/main.c), owns MPI initialisation and
 * turns the returned status into the process exit code (or MPI_Abort for a non-collective error on
 * several ranks); the fmtrain executable's main (src/cli/fmtrain.c) only calls it.
 */
#ifndef FM_CLI_H
#define FM_CLI_H

#include "core/status.h"

struct fm_trainer_test_hooks; /* train/trainer.h */

/* What a test executable installs in the program (tests/train/fmtrain_faults.c). The fmtrain
 * executable passes none: production runs never see test hooks. */
typedef struct fm_main_hooks {
    const struct fm_trainer_test_hooks *trainer; /* `train` installs them on its trainer */
} fm_main_hooks;

/* The fmtrain program: `fmtrain COMMAND ARGS...`. Dispatches the command, initialises MPI for the
 * commands that need it, prints the error of a failed command and returns the exit code (or ends
 * the job with MPI_Abort, see main.c). hooks: NULL, or a test executable's hooks. */
int fm_main(int argc, char **argv, const fm_main_hooks *hooks);

/* What `main` tells a command about the process it runs in. */
typedef struct fm_cmd_env {
    int mpi_initialized; /* MPI_Init_thread was called (commands with needs_mpi) */
    int world_rank;      /* 0 when MPI is not initialised */
    int world_size;      /* 1 when MPI is not initialised */
    int stdout_is_tty;
    int stderr_is_tty;
    const fm_main_hooks *hooks; /* NULL in fmtrain; a test executable's hooks */
    void (*exit_now)(int code); /* ends the process at once with `code`, from any thread, without
                                   MPI_Finalize or atexit handlers: the hang watchdog's way out
                                   when the main thread is stuck (train/watchdog.h) */
} fm_cmd_env;

typedef struct fm_command {
    const char *name;    /* "train" */
    const char *summary; /* one line for `fmtrain help` */
    const char *help;    /* full text for `fmtrain help NAME` (usage line first) */
    int needs_mpi;       /* main initialises MPI before run() */
    fm_status (*run)(int argc, char **argv, const fm_cmd_env *env); /* argv[0] is the command name */
} fm_command;

/* The commands, one per src/cli/cmd_<name>.c (each file defines its one). */
extern const fm_command fm_cmd_train;
extern const fm_command fm_cmd_prepare;
extern const fm_command fm_cmd_inspect;
extern const fm_command fm_cmd_topology;
extern const fm_command fm_cmd_plot;
extern const fm_command fm_cmd_sample;
extern const fm_command fm_cmd_eval;
extern const fm_command fm_cmd_export;
extern const fm_command fm_cmd_import;
extern const fm_command fm_cmd_plan;

/* The table, NULL-terminated (src/cli/commands.c). */
extern const fm_command *const fm_commands[];
const fm_command *fm_command_find(const char *name);

/* ---- option parsing ------------------------------------------------------------------------- */

typedef enum {
    FM_CLI_FLAG,   /* --name            dest: int*, set to 1 */
    FM_CLI_STRING, /* --name VALUE      dest: const char**, last one wins */
    FM_CLI_LIST    /* --name VALUE ...  dest: fm_cli_list*, repeatable */
} fm_cli_kind;

typedef struct fm_cli_list {
    const char **items; /* pointers into argv; array owned by the list (fm_cli_list_free) */
    int n;
} fm_cli_list;

typedef struct fm_cli_opt {
    const char *name; /* without the dashes: "vocab-size" */
    fm_cli_kind kind;
    void *dest;
} fm_cli_opt;

/* Parses argv[1..argc-1] of command `cmd`: options ("--name VALUE", "--name=VALUE", flags) in any
 * order, everything else (and everything after "--") appended to `positional`. An unknown option is
 * a usage error that names the closest known option. Free the lists with fm_cli_list_free. */
fm_status fm_cli_parse(const char *cmd, int argc, char **argv, const fm_cli_opt *opts, int nopts,
                       fm_cli_list *positional);
void fm_cli_list_free(fm_cli_list *list);

/* Parses a whole decimal number / a real number from an option's text; usage error naming the option. */
fm_status fm_cli_int(const char *option, const char *text, long long min, long long max,
                     long long *out);
fm_status fm_cli_double(const char *option, const char *text, double min, double max, double *out);

#endif /* FM_CLI_H */
