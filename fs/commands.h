/* diskshelf: the subcommands that talk to a running mount.
 *
 * Each takes the arguments after its name and returns the process exit
 * code (0 ok, 1 failure, 2 usage).
 *
 * Thread model: run on the main thread of a short-lived process.
 */
#ifndef DISKSHELF_COMMANDS_H
#define DISKSHELF_COMMANDS_H

#include <stdbool.h>
#include <stdio.h>

/* diskshelf status [--json] MOUNTPOINT [ENTRY...] (fs/status-cmd.c) */
int status_command (int argc, char **argv);

/* Turn the text of a status file (modified in place) into the output of
 * `diskshelf status`: JSON or text, only the named entries when nnames >
 * 0 (found[i] is set for each name matched; found may be NULL when
 * nnames is 0).  Returns 0 or -ENOMEM.  Used by status_command and the
 * fuzz harness. */
int status_render (char *text, bool json, const char *mountpoint,
                   int nnames, char **names, bool *found, FILE *out);

/* diskshelf prefetch [--background] FILE... (fs/prefetch-cmd.c) */
int prefetch_command (int argc, char **argv);

#endif
