/* diskshelf fuzz: replay a corpus through one harness without libFuzzer.
 *
 * `replay-NAME FILE|DIR...` feeds every file (a directory's files, not
 * recursively) to the harness's LLVMFuzzerTestOneInput once.  meson test
 * runs it over fuzz/corpus/NAME on the normal and the sanitizer builds, so
 * every reproducer a fuzzer ever found stays a regression test. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));

/* Run the harness on one file's bytes; returns 0 or -1 when unreadable. */
static int
replay_file (const char *path)
{
  FILE *fp = fopen (path, "rb");
  uint8_t *data = NULL;
  size_t size = 0, cap = 0, n;

  if (fp == NULL)
    {
      fprintf (stderr, "replay: %s: %s\n", path, strerror (errno));
      return -1;
    }
  do
    {
      if (size == cap)
        {
          cap = cap ? cap * 2 : 65536;
          uint8_t *grown = realloc (data, cap);
          if (grown == NULL)
            {
              free (data);
              fclose (fp);
              fprintf (stderr, "replay: %s: out of memory\n", path);
              return -1;
            }
          data = grown;
        }
      n = fread (data + size, 1, cap - size, fp);
      size += n;
    }
  while (n > 0);
  fclose (fp);
  LLVMFuzzerTestOneInput (data, size);
  free (data);
  return 0;
}

/* Run the harness on every regular file of dir. */
static int
replay_dir (const char *dir, unsigned *count)
{
  struct dirent **names;
  int n = scandir (dir, &names, NULL, alphasort), failed = 0;

  if (n < 0)
    {
      fprintf (stderr, "replay: %s: %s\n", dir, strerror (errno));
      return -1;
    }
  for (int i = 0; i < n; i++)
    {
      char path[4096];
      struct stat st;

      snprintf (path, sizeof path, "%s/%s", dir, names[i]->d_name);
      if (stat (path, &st) == 0 && S_ISREG (st.st_mode))
        {
          if (replay_file (path) < 0)
            failed = -1;
          else
            (*count)++;
        }
      free (names[i]);
    }
  free (names);
  return failed;
}

int
main (int argc, char **argv)
{
  unsigned count = 0;
  int status = 0;

  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize (&argc, &argv);
  for (int i = 1; i < argc; i++)
    {
      struct stat st;

      if (stat (argv[i], &st) < 0)
        {
          fprintf (stderr, "replay: %s: %s\n", argv[i], strerror (errno));
          status = 1;
        }
      else if (S_ISDIR (st.st_mode) ? replay_dir (argv[i], &count) < 0
               : (replay_file (argv[i]) < 0 || (count++, 0)))
        status = 1;
    }
  printf ("replayed %u input%s\n", count, count == 1 ? "" : "s");
  return status;
}
