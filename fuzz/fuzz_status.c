/* Fuzz harness: `diskshelf status` turning a status file's text into its
 * text and JSON output (fs/status-cmd.c's status_render), with and without
 * entry names to pick. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

/* Render one copy of the input; the output goes to a memory stream. */
static void
render (const uint8_t *data, size_t size, bool json, int nnames)
{
  static char *names[] = { "a.img", "/mnt/vm/b.img" };
  bool found[2] = { false, false };
  char *copy = malloc (size + 1);
  char *out = NULL;
  size_t len = 0;
  FILE *mem;

  if (copy == NULL)
    return;
  memcpy (copy, data, size);
  copy[size] = '\0';
  mem = open_memstream (&out, &len);
  if (mem)
    {
      status_render (copy, json, "/mnt", nnames, names, found, mem);
      fclose (mem);
    }
  free (out);
  free (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  render (data, size, true, 0);
  render (data, size, true, 2);
  render (data, size, false, 1);
  return 0;
}
