/* Fuzz harness: the daemon's command line and -o options
 * (config/options.c's options_parse).  The input is argv, NUL-separated. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

enum { MAX_ARGS = 32 };

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *copy = malloc (size + 1);
  char *argv[MAX_ARGS + 1];
  struct daemon_options o;
  int argc = 0;

  if (copy == NULL)
    return 0;
  memcpy (copy, data, size);
  copy[size] = '\0';
  for (size_t i = 0; i <= size && argc < MAX_ARGS;)
    {
      argv[argc++] = copy + i;
      i += strlen (copy + i) + 1;
    }
  argv[argc] = NULL;
  memset (&o, 0, sizeof o);
  options_parse (argc, argv, &o);
  options_free (&o);
  fflush (stdout);
  free (copy);
  return 0;
}
