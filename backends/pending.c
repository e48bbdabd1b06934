/* diskshelf: constructors of layers that are not built yet.
 *
 * Each piece of work that builds a layer deletes its function from this
 * file; when the file is empty it goes away. */
#include <errno.h>

#include "error.h"
#include "stack.h"
#include "blockcache.h"
#include "diskcache.h"

int
layer_xz_open (const struct stack_context *ctx, struct layer *lower,
               struct layer **out)
{
  return error_set (ENOTSUP, "xz: not built yet");
}

int
block_cache_new (uint64_t max_bytes, unsigned workers,
                 struct block_cache **out)
{
  *out = NULL;
  return 0;
}

void
block_cache_free (struct block_cache *cache)
{
}
