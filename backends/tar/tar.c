/* diskshelf: one member of a tar archive (`entry = NAME`) as the file.
 *
 * The constructor finds the member once (scan.c); afterwards the layer is
 * a read-only window [data_offset, data_offset + size) onto the layer
 * below, which may be a plain file, HTTP, NBD, or xz over any of them.
 *
 * Thread model: after the constructor returns, every field is constant,
 * so pread, extent and prefetch run from any number of threads at once
 * and simply pass the call down with a shifted offset.  The layer below
 * is thread-safe by the layer contract.
 */
#include "tar-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"
#include "stack.h"
#include "text.h"

struct tar_layer
{
  struct layer layer;        /* first: the generic part */
  char *source;              /* archive name for messages, any password
                                replaced by "***" (text_redact_url); owned */
  char *member;              /* member name as asked, escaped for
                                messages (text_escape); owned */
  struct tar_member where;   /* constant after open */
};

/* Read from the member: the same bytes of the layer below, shifted. */
static int
tar_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct tar_layer *t = (struct tar_layer *) l;
  int r = layer_pread (l->lower, buf, count, t->where.data_offset + offset);

  if (r < 0)
    return error_prefix (r, "tar: %s: %s", t->source, t->member);
  return 0;
}

/* Lend the member's bytes in place: those of the layer below, shifted. */
static int
tar_borrow (struct layer *l, size_t count, uint64_t offset,
            struct layer_borrow *out)
{
  struct tar_layer *t = (struct tar_layer *) l;
  int r = layer_borrow (l->lower, count, t->where.data_offset + offset, out);

  if (r < 0)
    return error_prefix (r, "tar: %s: %s", t->source, t->member);
  return r;
}

/* The allocation state of the member is that of the bytes below it. */
static int
tar_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  struct tar_layer *t = (struct tar_layer *) l;
  int r = layer_extent (l->lower, t->where.data_offset + offset, out);

  if (r < 0)
    return error_prefix (r, "tar: %s: %s", t->source, t->member);
  if (out->length > l->size - offset)
    out->length = l->size - offset;
  return 0;
}

/* Pass a read-ahead hint down, shifted. */
static int
tar_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  struct tar_layer *t = (struct tar_layer *) l;

  if (offset >= l->size)
    return 0;
  if (length > l->size - offset)
    length = l->size - offset;
  layer_prefetch (l->lower, t->where.data_offset + offset, length);
  return 0;
}

/* Where the member is and what finding it cost. */
static void
tar_status (struct layer *l, FILE *out)
{
  struct tar_layer *t = (struct tar_layer *) l;

  fprintf (out, "tar-member: %s\n", t->member);
  fprintf (out, "tar-data-offset: %" PRIu64 "\n", t->where.data_offset);
  fprintf (out, "tar-header-offset: %" PRIu64 "\n", t->where.header_offset);
  fprintf (out, "tar-bytes-scanned: %" PRIu64 "\n", t->where.bytes_read);
  fprintf (out, "tar-headers-scanned: %" PRIu64 "\n", t->where.headers);
}

/* Free the layer and the stack below it. */
static void
tar_close (struct layer *l)
{
  struct tar_layer *t = (struct tar_layer *) l;

  layer_close (l->lower);
  free (t->source);
  free (t->member);
  free (t);
}

static const struct layer_ops tar_ops = {
  .name = "tar",
  .pread = tar_pread,
  .borrow = tar_borrow,
  .extent = tar_extent,
  .prefetch = tar_prefetch,
  .status = tar_status,
  .close = tar_close,
};

/* Open member `member` of the archive in lower; takes lower on success. */
int
layer_tar_open (const struct stack_context *ctx, struct layer *lower,
                const char *member, struct layer **out)
{
  const struct entry_config *e = ctx ? ctx->entry : NULL;
  const char *source = e && e->source ? e->source
                       : e && e->name ? e->name : "archive";
  uint64_t limit = e ? e->scan_limit : 0;
  struct tar_layer *t;
  int r;

  t = calloc (1, sizeof *t);
  if (t == NULL || (t->source = text_redacted_copy (source)) == NULL)
    {
      free (t);
      return error_set (ENOMEM, "tar: out of memory");
    }
  /* From here on only the redacted copy is named in messages. */
  source = t->source;
  if (member == NULL || member[0] == '\0')
    {
      r = error_set (EINVAL, "tar: %s: `entry =` names no member", source);
      goto err;
    }
  t->member = malloc (4 * strlen (member) + 1);
  if (t->member)
    text_escape (t->member, 4 * strlen (member) + 1, member, strlen (member));
  if (t->member == NULL)
    {
      r = error_set (ENOMEM, "tar: %s: out of memory", source);
      goto err;
    }
  r = tar_scan (lower, source, member, limit, &t->where);
  if (r < 0)
    goto err;

  t->layer.ops = &tar_ops;
  t->layer.lower = lower;
  t->layer.size = t->where.size;
  t->layer.writable = false;
  t->layer.immutable = lower->immutable;
  log_info ("tar: %s: member %s: %" PRIu64 " bytes at offset %" PRIu64
            ", found after reading %" PRIu64 " bytes of the archive "
            "(%" PRIu64 " headers)", source, t->member, t->where.size,
            t->where.data_offset, t->where.bytes_read, t->where.headers);
  *out = &t->layer;
  return 0;

 err:
  free (t->source);
  free (t->member);
  free (t);
  return r;
}
