/* cmd_train.c — `fmtrain train PARAMS.ini [--set section.key=value]... [--dry-run]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/checkpoint.h"
#include "ckpt/run_dir.h"
#include "cli/cli.h"
#include "config/config.h"
#include "train/signals.h"
#include "train/trainer.h"

static const char train_help[] =
    "Usage: fmtrain train PARAMS.ini [--set section.key=value]... [--dry-run] [--overwrite]\n"
    "\n"
    "Trains the model described by the parameter file PARAMS.ini (see docs/parameters.md and the\n"
    "examples in inputs/). Launch it with srun or mpirun: every rank runs the same command.\n"
    "\n"
    "Options:\n"
    "  --set section.key=value  override one parameter (repeatable; validated like the file)\n"
    "  --dry-run                validate everything (configuration, dataset, placement), print the\n"
    "                           effective configuration, the placement table, the parameter count,\n"
    "                           the memory estimate and the global batch, check every token id of\n"
    "                           the dataset, the run directory (writable, not in use by another\n"
    "                           fmtrain, room for keep_last + 1 checkpoints), and exit without\n"
    "                           training\n"
    "  --overwrite              with [checkpoint] resume = never, delete the checkpoints already in\n"
    "                           the run directory and start afresh (refused without it)\n"
    "  --help                   show this help\n"
    "\n"
    "Environment: FMTRAIN_PROGRESS=inplace|lines chooses the progress display (default: a line\n"
    "updated in place on a terminal, plain lines under mpirun/srun and in logs); FMTRAIN_END_TIME\n"
    "(seconds since the epoch) sets the wall-time limit when Slurm's is not available.\n"
    "\n"
    "Signals: SIGUSR1 and SIGTERM stop at the next step with a checkpoint (exit 75). A hang\n"
    "(a step, evaluation or checkpoint write far longer than usual: [runtime] hang_factor,\n"
    "hang_min_minutes) ends every rank with exit 75 too. The run directory is locked while\n"
    "training (<run dir>/fmtrain.lock): a second fmtrain on it exits 2. See docs/training.md.\n";

/* Whether rank 0's progress line may be rewritten in place. Under mpirun/srun the rank's stdout is
 * often a pseudo-terminal of the launcher even when the launcher's own output goes to a batch log,
 * so launched ranks print plain lines unless FMTRAIN_PROGRESS=inplace asks otherwise
 * (FMTRAIN_PROGRESS=lines forces plain lines everywhere). */
static int progress_in_place(const fm_cmd_env *env)
{
    const char *mode = getenv("FMTRAIN_PROGRESS");
    if (mode && strcmp(mode, "inplace") == 0) return 1;
    if (mode && strcmp(mode, "lines") == 0) return 0;
    if (!env->stdout_is_tty) return 0;
    const char *launcher_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_STEP_ID",
                                   "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof launcher_vars / sizeof *launcher_vars; i++)
        if (getenv(launcher_vars[i])) return 0;
    return 1;
}

/* Loads the parameter file and applies the overrides, then validates. */
static fm_status load_config(const char *path, const fm_cli_list *sets, fm_config *cfg)
{
    fm_config_defaults(cfg);
    FM_TRY(fm_config_load(cfg, path));
    for (int i = 0; i < sets->n; i++) FM_TRY(fm_config_set(cfg, sets->items[i]));
    FM_TRY(fm_config_validate(cfg));
    return NULL;
}

static fm_status train_run(int argc, char **argv, const fm_cmd_env *env)
{
    fm_cli_list sets = {0}, pos = {0};
    int dry_run = 0, overwrite = 0;
    const fm_cli_opt opts[] = {
        {"set", FM_CLI_LIST, &sets},
        {"dry-run", FM_CLI_FLAG, &dry_run},
        {"overwrite", FM_CLI_FLAG, &overwrite},
    };
    fm_status st = NULL;
    fm_config *cfg = NULL;
    fm_trainer *trainer = NULL;
    int signals_installed = 0;
    fm_checkpoint_ctx *ckpt = NULL;
    fm_run_lock *lock = NULL;
    FILE *log = env->world_rank == 0 ? stdout : NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("train", argc, argv, opts, 3, &pos));
    /* First thing: SIGUSR1/SIGTERM become stop requests (a flag), also during start-up. */
    if (!dry_run) {
        FM_TRY_GOTO(st, done, fm_signals_install());
        signals_installed = 1;
    }
    if (pos.n != 1) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain train: expected one parameter file, got %d argument%s; "
                                  "usage: fmtrain train PARAMS.ini [--set section.key=value]... [--dry-run]",
                    pos.n, pos.n == 1 ? "" : "s");
        goto done;
    }
    cfg = malloc(sizeof *cfg);
    if (!cfg) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    FM_TRY_GOTO(st, done, load_config(pos.items[0], &sets, cfg));
    if (dry_run && env->world_rank == 0) {
        printf("# effective configuration of %s\n", pos.items[0]);
        fm_config_write(cfg, stdout);
        fflush(stdout);
    }
    char buf[FM_CONFIG_PATH_MAX], run_dir[FM_CONFIG_PATH_MAX];
    snprintf(run_dir, sizeof run_dir, "%s", fm_config_run_dir(cfg, buf, sizeof buf));
    /* One trainer per run directory: the lock comes before anything in it is touched (prepare
     * removes temporary files it takes for a killed writer's). Not in a dry run: it only looks. */
    if (!dry_run) FM_TRY_GOTO(st, done, fm_run_dir_lock(MPI_COMM_WORLD, run_dir, log, &lock));
    /* Checkpoints: what to resume from, decided before the trainer exists because a changed rank
     * count adjusts [train] grad_accum (src/ckpt/checkpoint.h). Not in a dry run (it may delete files). */
    if (!dry_run)
        FM_TRY_GOTO(st, done, fm_checkpoint_prepare(cfg, MPI_COMM_WORLD, overwrite, log, &ckpt));
    fm_trainer_options topts = {pos.items[0], stdout, progress_in_place(env), dry_run,
                                env->exit_now};
    FM_TRY_GOTO(st, done, fm_trainer_create(cfg, &topts, &trainer));
    uint64_t ckpt_bytes =
        fm_checkpoint_estimate_size(fm_trainer_shape(trainer), cfg->checkpoint_align_bytes);
    if (dry_run) {
        /* What a run would meet before its first checkpoint: the run directory (can it be made and
         * written, is it in use), room for keep_last + 1 checkpoints. */
        FM_TRY_GOTO(st, done, fm_run_dir_check(MPI_COMM_WORLD, run_dir, ckpt_bytes,
                                               cfg->checkpoint_keep_last, log));
        if (env->world_rank == 0) printf("# dry run: configuration is valid\n");
    } else {
        FM_TRY_GOTO(st, done, fm_run_dir_check_space(MPI_COMM_WORLD, run_dir, ckpt_bytes,
                                                     cfg->checkpoint_keep_last, log));
        if (env->hooks && env->hooks->trainer) fm_trainer_set_test_hooks(trainer, env->hooks->trainer);
        fm_trainer_hooks hooks = fm_checkpoint_hooks(ckpt);
        st = fm_trainer_run(trainer, &hooks);
    }
done:
    /* Every rank parses the same file and overrides, so configuration errors are collective. */
    if (st && (fm_status_code(st) == FM_ERR_CONFIG || fm_status_code(st) == FM_ERR_USAGE))
        fm_status_collective(st);
    /* A rank-local error on several ranks ends in MPI_Abort (main): do not enter the collective
     * clean-up, which would wait for ranks that never arrive. */
    if (!st || fm_status_is_collective(st) || env->world_size == 1) fm_trainer_free(&trainer);
    fm_checkpoint_ctx_free(&ckpt);
    fm_run_dir_unlock(&lock);
    if (signals_installed) fm_signals_restore();
    free(cfg);
    fm_cli_list_free(&sets);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_train = {"train", "train a model from a parameter file", train_help, 1,
                                 train_run};
