/* diskshelf: passthrough hooks, not handled yet (see hooks.h). */
#include "hooks.h"

void
fs_before_loop (struct fuse_session *se)
{
  (void) se;
}

int
fs_open_backing (fuse_req_t req, struct fs_entry *e,
                 struct fuse_file_info *fi)
{
  (void) req;
  (void) e;
  (void) fi;
  return 0;
}
