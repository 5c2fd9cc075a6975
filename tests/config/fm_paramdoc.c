/* fm_paramdoc — prints docs/parameters.md, generated from the schema table in src/config/config.c.
 *   fm_paramdoc > docs/parameters.md
 * The test `config_paramdoc_current` fails when the committed file differs from this output. */
#include <stdio.h>

#include "config/config.h"

int main(void)
{
    fm_status st = fm_config_check_schema();
    if (st) {
        fm_status_print(st, stderr, 0);
        fm_status_free(&st);
        return 1;
    }
    fm_config_write_docs(stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}
