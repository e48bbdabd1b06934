/* diskshelf: where FUSE passthrough plugs into the low-level session.
 *
 * The INIT negotiation needs the session between its mount and its
 * loop (fs_before_loop).  A read-only open of an entry whose stack lends
 * a file holding its bytes at the same offsets (layer_lend_file: a
 * read-only local file, a complete disk-cache copy) is answered with
 * that file as the kernel's backing file, so the kernel reads it
 * without sending READs (fs_open_backing); each entry version's inode
 * keeps the kernel's one-io-mode rule in e->passthrough
 * (fs/passthrough.h), and fs_release_backing gives an open's part
 * back.
 *
 * Thread model: fs_before_loop and fs_after_loop on the main thread,
 * once each; fs_open_backing on any FUSE thread, inside an open
 * request; fs_count_page_cache_bytes on any FUSE thread, inside a READ;
 * fs_release_backing wherever an open file is freed.
 */
#ifndef DISKSHELF_FS_HOOKS_H
#define DISKSHELF_FS_HOOKS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>

struct fs_entry;
struct open_file;

/* The session is mounted and its loop is about to start; want_passthrough
 * false (--passthrough=off) keeps every open on READs. */
void fs_before_loop (struct fuse_session *se, bool want_passthrough);

/* The loop ended and the session is destroyed. */
void fs_after_loop (void);

/* Decide a read-only open of e's inode (fi->fh is the open file, set):
 * 1 when it was answered with a backing file (the reply is sent, and
 * the open file freed if the kernel did not take it), 0 when the caller
 * replies with fuse_reply_open as usual. */
int fs_open_backing (fuse_req_t req, struct fs_entry *e,
                     struct fuse_file_info *fi);

/* A READ (not O_DIRECT) of size bytes of e brings them into the mount's
 * page cache.  Once the count covers the image, fs_open_backing lends no
 * backing file: the kernel keeps the mount's pages across opens.  A READ
 * for an image already counted whole means the kernel no longer holds
 * all its pages (memory pressure, drop_caches, fadvise), so the count
 * starts afresh and the next open is lent the backing file again.  Any
 * FUSE thread (atomic). */
void fs_count_page_cache_bytes (struct fs_entry *e, size_t size);

/* An open file goes (release, or exit): give back its part of the
 * inode's io mode and, with the last passthrough open, the backing file
 * and what lent it. */
void fs_release_backing (struct open_file *of);

#endif
