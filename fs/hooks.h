/* diskshelf: where FUSE passthrough plugs into the low-level session.
 *
 * Stubs until fs/passthrough.c (helper "passthru") provides them: the
 * INIT negotiation needs the session between its mount and its loop,
 * and a read-only open may be answered with a backing file the kernel
 * reads directly instead of a plain open reply.
 *
 * Thread model: fs_before_loop on the main thread, once, before the
 * loop starts; fs_open_backing on any FUSE thread, inside an open
 * request.
 */
#ifndef DISKSHELF_FS_HOOKS_H
#define DISKSHELF_FS_HOOKS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

struct fs_entry;

/* The session is mounted and its loop is about to start. */
void fs_before_loop (struct fuse_session *se);

/* Answer a read-only open of e's inode (fi->fh is the open file, set)
 * with a backing file: 1 when it replied to req, 0 when the caller
 * replies with fuse_reply_open as usual. */
int fs_open_backing (fuse_req_t req, struct fs_entry *e,
                     struct fuse_file_info *fi);

#endif
