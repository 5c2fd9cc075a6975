/* fmtrain.c — the entry point of the fmtrain executable: the program is fm_main (src/cli/main.c),
 * here without test hooks. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
    return fm_main(argc, argv, NULL);
}
