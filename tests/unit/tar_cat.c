/* diskshelf test tool: print one tar member through the tar layer.
 *
 * tar_cat ARCHIVE MEMBER [SCAN_LIMIT] opens ARCHIVE as a plain-file layer
 * (with its own small file layer, so the tool needs nothing but the tar
 * layer), stacks the tar layer on it, writes the member to stdout and
 * "bytes_scanned N reads M" and the layer's status to stderr.  On
 * failure it prints the layer's message to stderr and exits 1.  A
 * debugging aid, built by tests/meson.build.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "entry.h"
#include "error.h"
#include "stack.h"

struct fd_layer
{
  struct layer layer;
  int fd;
  uint64_t reads;
  uint64_t bytes;
};

/* pread on the file, counting the reads. */
static int
fd_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct fd_layer *f = (struct fd_layer *) l;
  char *p = buf;

  f->reads++;
  f->bytes += count;
  while (count > 0)
    {
      ssize_t n = pread (f->fd, p, count, (off_t) offset);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return error_set (n < 0 ? errno : EIO, "file: short read");
      p += n;
      count -= (size_t) n;
      offset += (uint64_t) n;
    }
  return 0;
}

/* Close the file and free the layer. */
static void
fd_close (struct layer *l)
{
  close (((struct fd_layer *) l)->fd);
  free (l);
}

static const struct layer_ops fd_ops = {
  .name = "file", .pread = fd_pread, .close = fd_close,
};

/* Open ARCHIVE, stack the tar layer, copy MEMBER to stdout. */
int
main (int argc, char **argv)
{
  struct entry_config entry = { 0 };
  struct stack_context ctx = { .entry = &entry };
  struct fd_layer *f;
  struct layer *t;
  struct stat st;
  uint64_t off = 0, reads, bytes;
  char *buf;

  if (argc < 3)
    {
      fprintf (stderr, "usage: tar_cat ARCHIVE MEMBER [SCAN_LIMIT]\n");
      return 2;
    }
  if (argc > 3)
    {
      char *end;
      errno = 0;
      entry.scan_limit = strtoull (argv[3], &end, 10);
      if (errno || end == argv[3] || *end != '\0')
        {
          fprintf (stderr, "tar_cat: bad scan limit\n");
          return 2;
        }
    }
  entry.source = argv[1];
  f = calloc (1, sizeof *f);
  f->fd = open (argv[1], O_RDONLY | O_CLOEXEC);
  if (f->fd < 0 || fstat (f->fd, &st) < 0)
    {
      perror (argv[1]);
      return 1;
    }
  f->layer.ops = &fd_ops;
  f->layer.size = (uint64_t) st.st_size;
  f->layer.immutable = true;
  if (layer_tar_open (&ctx, &f->layer, argv[2], &t) < 0)
    {
      fprintf (stderr, "%s\n", error_message ());
      layer_close (&f->layer);
      return 1;
    }
  reads = f->reads;
  bytes = f->bytes;
  buf = malloc (1 << 20);
  while (off < t->size)
    {
      size_t n = t->size - off < (1 << 20) ? (size_t) (t->size - off)
                                           : (1 << 20);
      if (layer_pread (t, buf, n, off) < 0
          || fwrite (buf, 1, n, stdout) != n)
        {
          fprintf (stderr, "%s\n", error_message ());
          return 1;
        }
      off += n;
    }
  fprintf (stderr, "bytes_scanned %" PRIu64 " reads %" PRIu64 "\n",
           bytes, reads);
  layer_status (t, stderr);
  free (buf);
  layer_close (t);
  return 0;
}
