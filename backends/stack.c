/* diskshelf: choosing and building the layers behind one entry.
 *
 * transport (by URI scheme, a .torrent file, or `command`) -> xz (by
 * magic bytes or `compression = xz`), or read-ahead over a bare NBD
 * transport -> tar member (by `entry =`; for a torrent, `entry =` names
 * the file inside it instead) -> copy-on-write overlay (by `overlay =`). */
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bt/bt.h"
#include "entry.h"
#include "error.h"
#include "readahead.h"
#include "text.h"

static const unsigned char xz_magic[6] = { 0xFD, '7', 'z', 'X', 'Z', 0x00 };

/* Is the local file a torrent: named *.torrent, or a small file that
 * starts like a bencoded dictionary ("d" and a key length) and parses as
 * a metainfo file (so a disk image that happens to start with "d5" stays
 * a disk image)? */
static bool
is_torrent_file (const char *path)
{
  size_t len = strlen (path);
  if (len > 8 && strcasecmp (path + len - 8, ".torrent") == 0)
    return true;
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  struct stat st;
  char head[2];
  bool yes = fstat (fd, &st) == 0 && S_ISREG (st.st_mode)
             && st.st_size < (64 << 20) && pread (fd, head, 2, 0) == 2
             && head[0] == 'd' && head[1] >= '1' && head[1] <= '9';
  close (fd);
  if (yes)
    {
      struct bt_metainfo *mi = NULL;
      yes = bt_metainfo_load (path, &mi) == 0;
      bt_metainfo_free (yes ? mi : NULL);
      error_clear ();
    }
  return yes;
}

/* Open the transport named by the entry's source or command. */
static int
open_transport (const struct stack_context *ctx, struct layer **out)
{
  const char *source = ctx->entry->source;

  if (ctx->entry->command)
    return layer_captive_open (ctx, out);
  if (strncasecmp (source, "http://", 7) == 0
      || strncasecmp (source, "https://", 8) == 0)
    return layer_http_open (ctx, source, out);
  if (strncasecmp (source, "nbd", 3) == 0 && strstr (source, "://"))
    return layer_nbd_open (ctx, source, out);
  if (strncasecmp (source, "magnet:", 7) == 0)
    return layer_torrent_open (ctx, source, out);
  if (strncasecmp (source, "file://", 7) == 0)
    source += 7;
  if (is_torrent_file (source))
    return layer_torrent_open (ctx, source, out);
  return layer_file_open (ctx, source, out);
}

/* Does the layer start with the xz stream magic? */
static int
has_xz_magic (struct layer *l, bool *yes)
{
  unsigned char head[sizeof xz_magic];
  int r;

  *yes = false;
  if (l->size < 32)
    return 0;
  r = layer_pread (l, head, sizeof head, 0);
  if (r < 0)
    return r;
  *yes = memcmp (head, xz_magic, sizeof head) == 0;
  return 0;
}

/* Add the decoder the entry asks for or the magic reveals. */
static int
add_decoder (const struct stack_context *ctx, struct layer **top)
{
  bool is_xz = false;
  struct layer *decoded;
  int r;

  switch (ctx->entry->compression)
    {
    case COMPRESSION_NONE:
      return 0;
    case COMPRESSION_XZ:
      is_xz = true;
      break;
    case COMPRESSION_AUTO:
      /* Probing a torrent would wait for the swarm before the mount is
       * up (and fail it when no peer answers yet): torrents of xz
       * images need `compression = xz`. */
      if (strcmp ((*top)->ops->name, "torrent") == 0)
        return 0;
      r = has_xz_magic (*top, &is_xz);
      if (r < 0)
        return r;
      break;
    }
  if (!is_xz)
    return 0;
  r = layer_xz_open (ctx, *top, &decoded);
  if (r < 0)
    return r;
  *top = decoded;
  return 0;
}

/* Build the stack for one entry. */
int
stack_open (const struct stack_context *ctx, struct layer **out)
{
  struct layer *top = NULL, *transport, *ahead, *member, *overlay;
  int r;

  r = open_transport (ctx, &top);
  if (r < 0)
    return r;
  transport = top;
  r = add_decoder (ctx, &top);
  if (r < 0)
    goto fail;
  if (top == transport && strcmp (top->ops->name, "nbd") == 0)
    {
      /* NBD has a round trip per request and no cache of its own (the
       * xz layer reads ahead for itself when it sits on top). */
      r = layer_readahead_open (top, &ahead);
      if (r < 0)
        goto fail;
      top = ahead;
    }
  /* For a torrent, `entry =` chose the file inside it already. */
  if (ctx->entry->member && strcmp (transport->ops->name, "torrent") != 0)
    {
      r = layer_tar_open (ctx, top, ctx->entry->member, &member);
      if (r < 0)
        goto fail;
      top = member;
    }
  r = layer_overlay_open (ctx, top, &overlay);
  if (r < 0)
    goto fail;
  top = overlay;
  *out = top;
  return 0;

 fail:
  layer_close (top);
  return r;
}
