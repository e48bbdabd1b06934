/* diskshelf: sharing the NBD layer with the captive-server layer.
 *
 * nbd_layer_open_with opens an NBD layer like layer_nbd_open, naming it
 * `display` in messages, and calls on_close(arg) after its client has
 * disconnected (the captive layer stops its server there).  On failure
 * on_close is not called. */
#ifndef DISKSHELF_NBD_LAYER_H
#define DISKSHELF_NBD_LAYER_H

#include "stack.h"

int nbd_layer_open_with (const struct stack_context *ctx, const char *uri,
                         const char *display, void (*on_close) (void *),
                         void *arg, struct layer **out);

#endif
