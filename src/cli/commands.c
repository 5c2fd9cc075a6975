/* commands.c — the table of subcommands. Each one lives in src/cli/cmd_<name>.c and is declared in cli.h. */
#include <string.h>

#include "cli/cli.h"

const fm_command *const fm_commands[] = {
    &fm_cmd_train,
    &fm_cmd_prepare,
    &fm_cmd_inspect,
    &fm_cmd_topology,
    &fm_cmd_plot,
    &fm_cmd_sample,
    &fm_cmd_eval,
    &fm_cmd_export,
    &fm_cmd_import,
    &fm_cmd_plan,
    NULL,
};

const fm_command *fm_command_find(const char *name)
{
    for (int i = 0; fm_commands[i]; i++)
        if (strcmp(fm_commands[i]->name, name) == 0) return fm_commands[i];
    return NULL;
}
