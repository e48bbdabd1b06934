/* bench/fuse_ceiling: the FUSE ceiling for the read benchmarks.
 *
 *   fuse_ceiling MODE SIZE MOUNTPOINT
 *
 * Mounts MOUNTPOINT with one file, /img, of SIZE bytes served from
 * memory through libfuse's high-level API with the same loop settings as
 * the daemon (multithreaded, 64 threads, no clone_fd), so a sequential
 * read of /img measures what FUSE itself costs with no decoding behind it.
 * Runs in the foreground until unmounted.
 *
 * MODE says how a read is answered:
 *   copy    memcpy from the in-memory image into libfuse's buffer (what
 *           the daemon does today: one user-space copy, then the write
 *           to /dev/fuse copies again);
 *   nocopy  the buffer is answered without filling it (the content is
 *           wrong): the cost of the user-space copy, i.e. what a reply
 *           straight from cached memory (low-level fuse_reply_data) would
 *           save at most;
 *   splice  read_buf answers with an fd buffer on a memfd holding the
 *           image, and libfuse splices it into /dev/fuse (the disk-cache
 *           hit path of issue 14).
 *
 * A bench tool, not installed.  Thread model: reads run on libfuse's
 * threads; the image and the memfd are read-only after start.
 */
#define FUSE_USE_VERSION 312
#include <fuse.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum mode { MODE_COPY, MODE_NOCOPY, MODE_SPLICE };

static enum mode mode;
static unsigned char *image;    /* size bytes, for copy */
static int image_fd = -1;       /* memfd, for splice */
static size_t size;

/* getattr: the root and /img.  With nullpath_ok an open file's getattr
 * comes without a path: only /img is ever opened. */
static int
c_getattr (const char *path, struct stat *st, struct fuse_file_info *fi)
{
  memset (st, 0, sizeof *st);
  if (path == NULL)
    path = "/img";
  if (strcmp (path, "/") == 0)
    {
      st->st_mode = S_IFDIR | 0755;
      st->st_nlink = 2;
      return 0;
    }
  if (strcmp (path, "/img") != 0)
    return -ENOENT;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = (off_t) size;
  return 0;
}

/* open: read-only, page cache kept like an immutable diskshelf entry. */
static int
c_open (const char *path, struct fuse_file_info *fi)
{
  if (strcmp (path, "/img") != 0)
    return -ENOENT;
  fi->keep_cache = 1;
  return 0;
}

/* The number of bytes a read at offset may return. */
static size_t
clamp (size_t count, off_t offset)
{
  if ((size_t) offset >= size)
    return 0;
  return count < size - (size_t) offset ? count : size - (size_t) offset;
}

/* read: copy or nocopy. */
static int
c_read (const char *path, char *buf, size_t count, off_t offset,
        struct fuse_file_info *fi)
{
  count = clamp (count, offset);
  if (mode == MODE_COPY)
    memcpy (buf, image + offset, count);
  return (int) count;
}

/* read_buf: an fd buffer on the memfd (splice mode only). */
static int
c_read_buf (const char *path, struct fuse_bufvec **bufp, size_t count,
            off_t offset, struct fuse_file_info *fi)
{
  struct fuse_bufvec *bv = malloc (sizeof *bv);

  if (bv == NULL)
    return -ENOMEM;
  *bv = FUSE_BUFVEC_INIT (clamp (count, offset));
  bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  bv->buf[0].fd = image_fd;
  bv->buf[0].pos = offset;
  *bufp = bv;
  return 0;
}

/* init: the daemon's settings; splice wanted in splice mode. */
static void *
c_init (struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  cfg->nullpath_ok = 1;
  if (conn->capable & FUSE_CAP_ASYNC_READ)
    conn->want |= FUSE_CAP_ASYNC_READ;
  if (mode == MODE_SPLICE && (conn->capable & FUSE_CAP_SPLICE_WRITE))
    conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
  return NULL;
}

static struct fuse_operations ops = {
  .init = c_init,
  .getattr = c_getattr,
  .open = c_open,
  .read = c_read,
};

/* Fill the image with a pattern, so its pages are really resident. */
static int
make_image (void)
{
  size_t i;

  image = malloc (size);
  if (image == NULL)
    return -1;
  for (i = 0; i < size; i++)
    image[i] = (unsigned char) (i * 2654435761u >> 13);
  if (mode == MODE_SPLICE)
    {
      image_fd = memfd_create ("ceiling", 0);
      if (image_fd < 0 || write (image_fd, image, size) != (ssize_t) size)
        return -1;
      free (image);
      image = NULL;
    }
  return 0;
}

int
main (int argc, char **argv)
{
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_loop_config *lc;
  struct fuse *fuse;
  char *end;
  int r;

  if (argc != 4)
    {
      fprintf (stderr, "usage: fuse_ceiling copy|nocopy|splice SIZE MOUNTPOINT\n");
      return 2;
    }
  if (strcmp (argv[1], "copy") == 0)
    mode = MODE_COPY;
  else if (strcmp (argv[1], "nocopy") == 0)
    mode = MODE_NOCOPY;
  else if (strcmp (argv[1], "splice") == 0)
    {
      mode = MODE_SPLICE;
      ops.read = NULL;
      ops.read_buf = c_read_buf;
    }
  else
    {
      fprintf (stderr, "fuse_ceiling: unknown mode %s\n", argv[1]);
      return 2;
    }
  errno = 0;
  size = strtoull (argv[2], &end, 10);
  if (errno || *end || size == 0)
    {
      fprintf (stderr, "fuse_ceiling: bad size %s\n", argv[2]);
      return 2;
    }
  if (make_image () < 0)
    {
      perror ("fuse_ceiling: image");
      return 1;
    }
  if (fuse_opt_add_arg (&args, "fuse_ceiling") < 0
      || fuse_opt_add_arg (&args, "-o") < 0
      || fuse_opt_add_arg (&args, "fsname=fuse_ceiling,subtype=ceiling") < 0)
    return 1;
  fuse = fuse_new (&args, &ops, sizeof ops, NULL);
  if (fuse == NULL || fuse_mount (fuse, argv[3]) != 0)
    return 1;
  lc = fuse_loop_cfg_create ();
  fuse_loop_cfg_set_clone_fd (lc, 0);
  fuse_loop_cfg_set_max_threads (lc, 64);
  fuse_loop_cfg_set_idle_threads (lc, 16);
  r = fuse_loop_mt (fuse, lc);
  fuse_loop_cfg_destroy (lc);
  fuse_unmount (fuse);
  fuse_destroy (fuse);
  fuse_opt_free_args (&args);
  free (image);
  return r == 0 ? 0 : 1;
}
