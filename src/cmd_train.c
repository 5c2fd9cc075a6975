/* cmd_train.c — `fmtrain train PARAMS.ini [--set section.key=value]... [--dry-run]`. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "config.h"

static const char train_help[] =
    "Usage: fmtrain train PARAMS.ini [--set section.key=value]... [--dry-run]\n"
    "\n"
    "Trains the model described by the parameter file PARAMS.ini (see docs/parameters.md and the\n"
    "examples in inputs/). Launch it with srun or mpirun: every rank runs the same command.\n"
    "\n"
    "Options:\n"
    "  --set section.key=value  override one parameter (repeatable; validated like the file)\n"
    "  --dry-run                validate everything, print the effective configuration, and exit\n"
    "  --help                   show this help\n";

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
    int dry_run = 0;
    const fm_cli_opt opts[] = {
        {"set", FM_CLI_LIST, &sets},
        {"dry-run", FM_CLI_FLAG, &dry_run},
    };
    fm_status st = NULL;
    fm_config *cfg = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("train", argc, argv, opts, 2, &pos));
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
    if (dry_run) {
        if (env->world_rank == 0) {
            printf("# effective configuration of %s\n", pos.items[0]);
            fm_config_write(cfg, stdout);
            printf("# dry run: configuration is valid\n");
        }
        goto done;
    }
    st = FM_ERR(FM_ERR_USAGE, "fmtrain train: the training loop is not part of this build yet; "
                              "use --dry-run to validate %s", pos.items[0]);
done:
    /* Every rank parses the same file and overrides, so configuration errors are collective. */
    if (st && (fm_status_code(st) == FM_ERR_CONFIG || fm_status_code(st) == FM_ERR_USAGE))
        fm_status_collective(st);
    free(cfg);
    fm_cli_list_free(&sets);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_train = {"train", "train a model from a parameter file", train_help, 1,
                                 train_run};
