/* diskshelf: ownership of served files (see perm.h). */
#include "perm.h"

#include "daemon.h"
#include "entry.h"

/* Entry keys, then daemon options, then the daemon's own ids. */
void
fs_entry_ownership (const struct daemon *d, const struct fs_entry *e,
                    struct stat *st)
{
  const struct entry_config *c = e->config;
  const struct daemon_options *o = &d->options;
  bool writable = fs_entry_writable ((struct fs_entry *) e);
  mode_t mode = writable ? 0644 : 0444;

  if (c->mode_set)
    mode = c->mode;
  else if (o->mode_set)
    mode = o->mode;
  if (!writable)
    mode &= (mode_t) ~0222;
  st->st_mode = (st->st_mode & ~(mode_t) 07777) | mode;
  st->st_uid = c->owner_set ? c->owner : o->owner_set ? o->owner : d->uid;
  st->st_gid = c->group_set ? c->group : o->group_set ? o->group : d->gid;
}
