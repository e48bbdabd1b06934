/* diskshelf fuzz: a read-only layer over the fuzzer's bytes, for the
 * harnesses of layers that read a lower layer (xz, tar).
 *
 * Ownership: the bytes are borrowed; memory_layer_new returns a layer the
 * caller frees with layer_close.  Thread model: one thread. */
#ifndef DISKSHELF_FUZZ_MEMORY_LAYER_H
#define DISKSHELF_FUZZ_MEMORY_LAYER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"

struct memory_layer
{
  struct layer layer;
  const uint8_t *data;
};

/* Copy from the bytes (layer_pread has checked the range). */
static int
memory_layer_pread (struct layer *l, void *buf, size_t count,
                    uint64_t offset)
{
  memcpy (buf, ((struct memory_layer *) l)->data + offset, count);
  return 0;
}

/* Free the struct; the bytes are the fuzzer's. */
static void
memory_layer_close (struct layer *l)
{
  free (l);
}

static const struct layer_ops memory_layer_ops = {
  .name = "memory",
  .pread = memory_layer_pread,
  .close = memory_layer_close,
};

/* A layer of size bytes at data, or NULL when out of memory. */
static inline struct layer *
memory_layer_new (const uint8_t *data, size_t size)
{
  struct memory_layer *m = calloc (1, sizeof *m);

  if (m == NULL)
    return NULL;
  m->layer.ops = &memory_layer_ops;
  m->layer.size = size;
  m->layer.immutable = true;
  m->data = data;
  return &m->layer;
}

#endif
