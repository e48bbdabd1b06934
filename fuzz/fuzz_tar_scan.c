/* Fuzz harness: the tar header scan (backends/tar/scan.c over libarchive,
 * and the closest-name suggestions of suggest.c): ustar, GNU long names
 * and links, pax records, hard links, sparse and special members.
 *
 * Input: the member name to look for, up to the first newline (at most
 * 255 bytes), then the archive. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "error.h"
#include "memory_layer.h"
#include "tar/tar-internal.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const uint8_t *nl = memchr (data, '\n', size < 256 ? size : 256);
  char name[256];
  size_t len;
  struct layer *lower;
  struct tar_member m;

  if (nl == NULL)
    return 0;
  len = (size_t) (nl - data);
  memcpy (name, data, len);
  name[len] = '\0';
  lower = memory_layer_new (nl + 1, size - len - 1);
  if (lower == NULL)
    return 0;
  /* A small scan limit too, so that path is reached. */
  (void) tar_scan (lower, "fuzz.tar", name, len % 2 ? 8192 : 0, &m);
  error_clear ();
  layer_close (lower);
  return 0;
}
