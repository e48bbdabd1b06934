/* diskshelf: FUSE passthrough for entries that lend a file (see hooks.h). */
#include "hooks.h"

#include "error.h"
#include "ops.h"
#include "passthrough.h"
#include "tree.h"

void
fs_before_loop (struct fuse_session *se, bool want_passthrough)
{
  if (!want_passthrough)
    {
      log_info ("FUSE passthrough off: --passthrough=off");
      return;
    }
  ops_hold_notifications (true);
  if (passthrough_negotiate (se) < 0)
    {
      log_error ("%s", error_message ());
      error_clear ();
    }
  ops_hold_notifications (false);
}

void
fs_after_loop (void)
{
  passthrough_session_ended ();
}

/* Whether `counted` bytes brought into the mount's page cache cover the
 * image, which the kernel then keeps across opens (immutable stacks
 * only).  One rule for opening (below) and for counting afresh. */
static bool
counted_whole (const struct fs_entry *e, uint64_t counted)
{
  return e->stack->immutable && counted >= e->stack->size;
}

static bool
mount_pages_hold_it (struct fs_entry *e)
{
  return counted_whole (e, __atomic_load_n (&e->bytes_to_page_cache,
                                            __ATOMIC_RELAXED));
}

void
fs_count_page_cache_bytes (struct fs_entry *e, size_t size)
{
  uint64_t before = __atomic_fetch_add (&e->bytes_to_page_cache, size,
                                        __ATOMIC_RELAXED);

  if (counted_whole (e, before))
    __atomic_store_n (&e->bytes_to_page_cache, size, __ATOMIC_RELAXED);
}

int
fs_open_backing (fuse_req_t req, struct fs_entry *e,
                 struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);
  struct passthrough_lend pl = { NULL, NULL };
  struct layer_lend lend;
  uint32_t id;
  int fd = -1;

  if (!passthrough_enabled ())
    return 0;
  /* An O_DIRECT open is served by us (it checks alignment), and so is an
   * open of an image the mount's page cache has seen whole: the kernel
   * keeps those pages across opens (keep_cache) and reads them without
   * us, where a backing file would be read again from its own pages or,
   * once the disk cache dropped them (diskcache-evict.c), from the disk.
   * Either joins an inode already passed through, as the kernel
   * requires. */
  if (!of->direct && !mount_pages_hold_it (e)
      && layer_lend_file (e->stack, &lend) > 0)
    {
      fd = lend.fd;
      pl.release = lend.release;
      pl.arg = lend.arg;
    }
  of->io_mode_counted = true;
  of->passthrough = passthrough_inode_open (&e->passthrough, fd, &pl,
                                            false, &id);
  if (!of->passthrough)
    return 0;
  __atomic_add_fetch (&e->passthrough_opens, 1, __ATOMIC_RELAXED);
  /* No FOPEN_KEEP_CACHE: the kernel fails passthrough opens with it.  A
   * reply the kernel did not take gets no release. */
  if (passthrough_reply_open (req, fi->fh, 0, id) != 0)
    ops_free_open_file (of);
  return 1;
}

void
fs_release_backing (struct open_file *of)
{
  if (of->entry && of->io_mode_counted)
    passthrough_inode_release (&of->entry->passthrough, of->passthrough,
                               false);
  of->io_mode_counted = false;
}
