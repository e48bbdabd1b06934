/* diskshelf: building the stack of layers behind one catalog entry.
 *
 * stack_open probes the source: the URI scheme picks the transport
 * (file, http(s), nbd*, torrent), magic bytes or `compression =` add the
 * xz decoder, `entry =` adds the tar member layer, and `overlay =` (or
 * --overlay) puts the copy-on-write overlay on top of everything.
 *
 * The shared services (decoded-block cache, disk cache) live in one
 * struct services owned by the daemon and outlive every stack.
 */
#ifndef DISKSHELF_STACK_H
#define DISKSHELF_STACK_H

#include "layer.h"

struct entry_config;
struct daemon_options;
struct block_cache;
struct disk_cache;

struct services
{
  struct block_cache *block_cache;  /* decoded blocks; never NULL */
  struct disk_cache *disk_cache;    /* NULL when --cache-dir=none */
};

/* What a layer constructor gets: the entry, the daemon's options and the
 * shared services.  All are borrowed and outlive the layer. */
struct stack_context
{
  const struct entry_config *entry;
  const struct daemon_options *options;
  struct services *services;
};

/* Build the whole stack for ctx->entry.  Returns 0 and *out, or a
 * negative errno with a message naming the entry. */
int stack_open (const struct stack_context *ctx, struct layer **out);

/* Transport and transform constructors.  Each returns 0 and *out or a
 * negative errno with a recorded message.  Constructors that take a
 * lower layer take ownership of it only on success. */
int layer_file_open (const struct stack_context *ctx, const char *path,
                     struct layer **out);
int layer_http_open (const struct stack_context *ctx, const char *url,
                     struct layer **out);
int layer_nbd_open (const struct stack_context *ctx, const char *uri,
                    struct layer **out);
int layer_captive_open (const struct stack_context *ctx, struct layer **out);
int layer_torrent_open (const struct stack_context *ctx, const char *path,
                        struct layer **out);
int layer_xz_open (const struct stack_context *ctx, struct layer *lower,
                   struct layer **out);
int layer_tar_open (const struct stack_context *ctx, struct layer *lower,
                    const char *member, struct layer **out);

/* The copy-on-write overlay when the entry's `overlay =` (or the
 * daemon's --overlay) asks for one; otherwise *out = lower, unchanged. */
int layer_overlay_open (const struct stack_context *ctx, struct layer *lower,
                        struct layer **out);

#endif
