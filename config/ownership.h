/* diskshelf: parsing the owner, group and mode of served files.
 *
 * Used by the entry keys `owner =`, `group =`, `mode =` and by the
 * daemon options of the same names (the defaults for every entry).
 * Names are looked up in the user and group databases when parsed, so a
 * typo is reported at once, with the file and line.
 *
 * Thread model: safe from any thread (reentrant lookups).
 */
#ifndef DISKSHELF_OWNERSHIP_H
#define DISKSHELF_OWNERSHIP_H

#include <sys/types.h>

/* A user name or a numeric uid.  Returns 0 or -EINVAL. */
int parse_owner (const char *text, uid_t *out);

/* A group name or a numeric gid.  Returns 0 or -EINVAL. */
int parse_group (const char *text, gid_t *out);

/* Permission bits in octal, "0444" or "644" (at most 0777).  Returns 0
 * or -EINVAL. */
int parse_mode (const char *text, mode_t *out);

#endif
