/* diskshelf: read-ahead for sequential readers of transports that do
 * not cache (NBD); see readahead.c for how it works.
 *
 * Ownership: the read-ahead layer owns lower once opened.
 * Thread model: safe from many threads, like every layer.
 */
#ifndef DISKSHELF_READAHEAD_H
#define DISKSHELF_READAHEAD_H

#include "layer.h"

/* Put a read-ahead layer on top of lower.  Returns 0 and *out, or a
 * negative errno with a recorded message (lower stays the caller's). */
int layer_readahead_open (struct layer *lower, struct layer **out);

#endif
