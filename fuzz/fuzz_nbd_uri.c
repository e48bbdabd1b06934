/* Fuzz harness: NBD URIs (nbd/uri.c's nbd_uri_parse).  The input is the
 * URI text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *text = malloc (size + 1);
  struct nbd_uri *uri = NULL;

  if (text == NULL)
    return 0;
  memcpy (text, data, size);
  text[size] = '\0';
  nbd_uri_is_nbd (text);
  if (nbd_uri_parse (text, &uri) == 0)
    nbd_uri_free (uri);
  free (text);
  return 0;
}
