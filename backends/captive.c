/* diskshelf: captive NBD servers (`command = qemu-nbd -f qcow2 vm.qcow2`).
 *
 * The daemon creates a listening Unix socket in a private directory and
 * starts the command with systemd socket activation (the socket as fd 3,
 * LISTEN_PID and LISTEN_FDS=1 in its environment), then serves the entry
 * through the NBD layer over that socket.  The listening socket stays
 * with the daemon, so when the server dies a monitor thread starts it
 * again on the same socket and the NBD client simply reconnects.  On
 * close the server is stopped by PID: SIGTERM, then SIGKILL after 5 s.
 *
 * The server never inherits the daemon's stdio (which, while the daemon
 * starts in the background, is the caller's terminal or pipe): stdin is
 * /dev/null, stdout and stderr are one pipe that an output thread reads,
 * logging each line as "ENTRY: line".
 *
 * Thread model: the monitor thread alone reaps the child; lock protects
 * pid and stopping.  The output thread alone reads out_read. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "captive.h"
#include "entry.h"
#include "error.h"
#include "nbd_layer.h"
#include "stack.h"
#include "thread.h"

extern char **environ;

struct captive
{
  char **argv;                 /* owned copy of the entry's command */
  char *display;               /* "command: qemu-nbd ..." */
  char dir[PATH_MAX];          /* private directory of the socket */
  char sock[PATH_MAX + 16];
  int listen_fd;
  int null_fd;
  char *entry_name;            /* for the server's output lines */
  int out_read, out_write;     /* the server's stdout and stderr */
  pthread_t output;
  bool output_started;
  bool output_stopping;        /* atomic */
  char **envp;                 /* environ + LISTEN_FDS + LISTEN_PID */
  char *listen_pid;            /* the LISTEN_PID= slot inside envp */

  pthread_mutex_t lock;
  pthread_cond_t cond;
  pid_t pid;                   /* protected by lock; 0 when not running */
  bool stopping;               /* protected by lock */
  unsigned restarts;           /* protected by lock */
  bool spawned;                /* protected by lock: first start done */
  int spawn_errno;             /* protected by lock */
  pthread_t monitor;
  bool monitor_started;
};

/* Write n as decimal into dst (async-signal-safe). */
static void
write_decimal (char *dst, long n)
{
  char tmp[24];
  int i = 0;

  do
    tmp[i++] = (char) ('0' + n % 10);
  while ((n /= 10) > 0);
  while (i > 0)
    *dst++ = tmp[--i];
  *dst = '\0';
}

/* Fork and exec the server with the socket as fd 3; returns the pid. */
static pid_t
spawn (struct captive *cp)
{
  pid_t pid = fork ();

  if (pid != 0)
    return pid;
  /* Child: only async-signal-safe calls from here on. */
  setpgid (0, 0);
  /* stdio first: the pipe may be fd 3, which the socket takes next. */
  dup2 (cp->null_fd, 0);
  dup2 (cp->out_write, 1);
  dup2 (cp->out_write, 2);
  if (cp->listen_fd == 3)
    fcntl (3, F_SETFD, 0);
  else if (dup2 (cp->listen_fd, 3) < 0)
    _exit (127);
  closefrom (4);
  write_decimal (cp->listen_pid + strlen ("LISTEN_PID="), (long) getpid ());
  {
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
  }
  execvpe (cp->argv[0], cp->argv, cp->envp);
  _exit (127);
}

/* Log one line of the server's output under the entry's name. */
static void
log_output_line (struct captive *cp, const char *line, size_t len)
{
  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
    len--;
  log_info ("%s: %.*s", cp->entry_name, (int) len, line);
}

/* Thread body: read the server's stdout and stderr until every writer
 * closed the pipe, or the layer closes and the pipe stays quiet. */
static void *
output_thread (void *arg)
{
  struct captive *cp = arg;
  char buf[4096];
  size_t used = 0;

  for (;;)
    {
      struct pollfd pfd = { cp->out_read, POLLIN, 0 };
      ssize_t n;
      char *nl;

      if (poll (&pfd, 1, 250) == 0)
        {
          if (__atomic_load_n (&cp->output_stopping, __ATOMIC_ACQUIRE))
            break;
          continue;
        }
      n = read (cp->out_read, buf + used, sizeof buf - used);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      used += (size_t) n;
      while ((nl = memchr (buf, '\n', used)) != NULL)
        {
          size_t len = (size_t) (nl - buf) + 1;
          log_output_line (cp, buf, len);
          memmove (buf, buf + len, used - len);
          used -= len;
        }
      if (used == sizeof buf)
        {
          /* A very long line is logged in pieces, never cut short. */
          log_output_line (cp, buf, used);
          used = 0;
        }
    }
  if (used > 0)
    log_output_line (cp, buf, used);
  return NULL;
}

/* Wait for the child; start it again unless we are stopping. */
static void *
monitor_thread (void *arg)
{
  struct captive *cp = arg;
  double backoff = 0.2;

  /* The server is started from this long-lived thread: a child may ask
   * for a signal when the thread that forked it ends (PDEATHSIG), so it
   * must not be a short-lived thread of the daemon. */
  pthread_mutex_lock (&cp->lock);
  cp->pid = spawn (cp);
  if (cp->pid < 0)
    {
      cp->spawn_errno = errno;
      cp->pid = 0;
    }
  cp->spawned = true;
  pthread_cond_broadcast (&cp->cond);
  pthread_mutex_unlock (&cp->lock);

  for (;;)
    {
      pid_t pid;
      int status;
      struct timespec t0, t1;

      pthread_mutex_lock (&cp->lock);
      pid = cp->pid;
      pthread_mutex_unlock (&cp->lock);
      if (pid <= 0)
        break;
      clock_gettime (CLOCK_MONOTONIC, &t0);
      while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
        ;
      clock_gettime (CLOCK_MONOTONIC, &t1);

      pthread_mutex_lock (&cp->lock);
      cp->pid = 0;
      if (cp->stopping)
        {
          pthread_cond_broadcast (&cp->cond);
          pthread_mutex_unlock (&cp->lock);
          break;
        }
      log_warning ("%s: the server (pid %ld) %s %d; starting it again",
                   cp->display, (long) pid,
                   WIFSIGNALED (status) ? "was killed by signal"
                   : "exited with status",
                   WIFSIGNALED (status) ? WTERMSIG (status)
                   : WEXITSTATUS (status));
      /* A server that dies at once is restarted ever more slowly. */
      if (t1.tv_sec - t0.tv_sec > 10)
        backoff = 0.2;
      {
        struct timespec until;
        clock_gettime (CLOCK_REALTIME, &until);
        until.tv_sec += (time_t) backoff;
        until.tv_nsec += (long) ((backoff - (double) (time_t) backoff) * 1e9);
        if (until.tv_nsec >= 1000000000L)
          {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
          }
        while (!cp->stopping
               && pthread_cond_timedwait (&cp->cond, &cp->lock, &until) == 0)
          ;
      }
      backoff = backoff * 2 > 5 ? 5 : backoff * 2;
      if (cp->stopping)
        {
          pthread_mutex_unlock (&cp->lock);
          break;
        }
      cp->pid = spawn (cp);
      cp->restarts++;
      if (cp->pid < 0)
        {
          log_error ("%s: cannot start the server: %s", cp->display,
                     strerror (errno));
          cp->pid = 0;
        }
      pthread_mutex_unlock (&cp->lock);
    }
  return NULL;
}

/* Stop the server by PID (SIGTERM, SIGKILL after 5 s) and free cp. */
static void
captive_free (void *arg)
{
  struct captive *cp = arg;
  struct timespec until;

  if (cp == NULL)
    return;
  pthread_mutex_lock (&cp->lock);
  cp->stopping = true;
  if (cp->pid > 0)
    kill (cp->pid, SIGTERM);
  pthread_cond_broadcast (&cp->cond);
  pthread_mutex_unlock (&cp->lock);
  if (cp->monitor_started)
    {
      clock_gettime (CLOCK_REALTIME, &until);
      until.tv_sec += 5;
      if (pthread_timedjoin_np (cp->monitor, NULL, &until) != 0)
        {
          pthread_mutex_lock (&cp->lock);
          if (cp->pid > 0)
            {
              log_warning ("%s: the server ignored SIGTERM; killing it",
                           cp->display);
              kill (cp->pid, SIGKILL);
            }
          pthread_mutex_unlock (&cp->lock);
          pthread_join (cp->monitor, NULL);
        }
    }
  /* The server is gone: close our end of its output pipe; the output
   * thread sees the end of it, or stops after a quiet moment when a
   * grandchild still holds it. */
  if (cp->out_write >= 0)
    close (cp->out_write);
  if (cp->output_started)
    {
      __atomic_store_n (&cp->output_stopping, true, __ATOMIC_RELEASE);
      pthread_join (cp->output, NULL);
    }
  if (cp->out_read >= 0)
    close (cp->out_read);
  free (cp->entry_name);
  if (cp->listen_fd >= 0)
    close (cp->listen_fd);
  if (cp->null_fd >= 0)
    close (cp->null_fd);
  if (cp->sock[0])
    unlink (cp->sock);
  if (cp->dir[0])
    rmdir (cp->dir);
  if (cp->envp)
    {
      size_t i;
      for (i = 0; cp->envp[i]; i++)
        if (strncmp (cp->envp[i], "LISTEN_", 7) == 0)
          free (cp->envp[i]);
      free (cp->envp);
    }
  if (cp->argv)
    {
      size_t i;
      for (i = 0; cp->argv[i]; i++)
        free (cp->argv[i]);
      free (cp->argv);
    }
  pthread_mutex_destroy (&cp->lock);
  pthread_cond_destroy (&cp->cond);
  free (cp->display);
  free (cp);
}

/* environ without LISTEN_* plus our own LISTEN_FDS and LISTEN_PID slot. */
static int
build_env (struct captive *cp)
{
  size_t n = 0, j = 0, i;

  while (environ[n])
    n++;
  cp->envp = calloc (n + 3, sizeof *cp->envp);
  if (cp->envp == NULL)
    return -ENOMEM;
  for (i = 0; i < n; i++)
    if (strncmp (environ[i], "LISTEN_", 7) != 0)
      cp->envp[j++] = environ[i];
  cp->envp[j] = strdup ("LISTEN_FDS=1");
  cp->listen_pid = calloc (1, sizeof "LISTEN_PID=" + 24);
  if (cp->envp[j] == NULL || cp->listen_pid == NULL)
    {
      free (cp->listen_pid);
      return -ENOMEM;
    }
  strcpy (cp->listen_pid, "LISTEN_PID=");
  cp->envp[j + 1] = cp->listen_pid;
  return 0;
}

/* Create the private directory and the listening socket. */
static int
make_socket (struct captive *cp)
{
  const char *base = getenv ("XDG_RUNTIME_DIR");
  struct sockaddr_un sun = { .sun_family = AF_UNIX };

  if (base == NULL || access (base, W_OK) != 0)
    base = getenv ("TMPDIR");
  if (base == NULL || access (base, W_OK) != 0)
    base = "/tmp";
  snprintf (cp->dir, sizeof cp->dir, "%s/diskshelf-captive-XXXXXX", base);
  if (mkdtemp (cp->dir) == NULL)
    {
      int err = errno;
      cp->dir[0] = '\0';
      return error_set (err, "%s: cannot create a socket directory in %s: "
                        "%s", cp->display, base, strerror (err));
    }
  snprintf (cp->sock, sizeof cp->sock, "%s/nbd.sock", cp->dir);
  if (strlen (cp->sock) >= sizeof sun.sun_path)
    return error_set (ENAMETOOLONG, "%s: socket path %s is too long",
                      cp->display, cp->sock);
  strcpy (sun.sun_path, cp->sock);
  cp->listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (cp->listen_fd < 0
      || bind (cp->listen_fd, (struct sockaddr *) &sun, sizeof sun) < 0
      || listen (cp->listen_fd, 64) < 0)
    {
      int err = errno;
      cp->sock[0] = cp->listen_fd >= 0 ? cp->sock[0] : '\0';
      return error_set (err, "%s: cannot listen on %s: %s", cp->display,
                        cp->sock, strerror (err));
    }
  return 0;
}

/* True if argv0 names an executable, directly or through $PATH. */
static bool
command_exists (const char *argv0)
{
  const char *path = getenv ("PATH");
  char buf[PATH_MAX];

  if (strchr (argv0, '/'))
    return access (argv0, X_OK) == 0;
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path)
    {
      size_t len = strcspn (path, ":");
      if (len > 0 && len + strlen (argv0) + 2 <= sizeof buf)
        {
          snprintf (buf, sizeof buf, "%.*s/%s", (int) len, path, argv0);
          if (access (buf, X_OK) == 0)
            return true;
        }
      path += len + (path[len] == ':');
    }
  return false;
}

/* Refuse an empty command or one that is not installed. */
int
captive_command_check (char *const *argv)
{
  if (argv == NULL || argv[0] == NULL)
    return error_set (EINVAL, "command: empty command");
  if (!command_exists (argv[0]))
    return error_set (ENOENT, "command: %s: not found (give its full path "
                      "or install it)", argv[0]);
  return 0;
}

/* The constructor for `command = ARGV` entries. */
int
layer_captive_open (const struct stack_context *ctx, struct layer **out)
{
  char **argv = ctx->entry->command;
  struct captive *cp;
  char uri[PATH_MAX + 64];
  size_t len = 0, i;
  int r;

  r = captive_command_check (argv);
  if (r < 0)
    return r;
  cp = calloc (1, sizeof *cp);
  if (cp == NULL)
    return error_set (ENOMEM, "command: out of memory");
  cp->listen_fd = cp->null_fd = cp->out_read = cp->out_write = -1;
  pthread_mutex_init (&cp->lock, NULL);
  pthread_cond_init (&cp->cond, NULL);
  for (i = 0; argv[i]; i++)
    ;
  cp->argv = calloc (i + 1, sizeof *cp->argv);
  for (i = 0; cp->argv && argv[i]; i++)
    if ((cp->argv[i] = strdup (argv[i])) == NULL)
      break;
  if (cp->argv == NULL || argv[i] != NULL)
    {
      captive_free (cp);
      return error_set (ENOMEM, "command: out of memory");
    }
  for (i = 0; argv[i]; i++)
    len += strlen (argv[i]) + 1;
  cp->display = malloc (len + sizeof "command: ");
  if (cp->display == NULL)
    {
      captive_free (cp);
      return error_set (ENOMEM, "command: out of memory");
    }
  strcpy (cp->display, "command:");
  for (i = 0; argv[i]; i++)
    {
      strcat (cp->display, " ");
      strcat (cp->display, argv[i]);
    }

  r = make_socket (cp);
  if (r < 0)
    goto fail;
  cp->null_fd = open ("/dev/null", O_RDWR | O_CLOEXEC);
  cp->entry_name = strdup (ctx->entry->name ? ctx->entry->name : "command");
  if (cp->null_fd < 0 || cp->entry_name == NULL || build_env (cp) < 0)
    {
      r = error_set (ENOMEM, "%s: cannot prepare the server", cp->display);
      goto fail;
    }
  {
    int ends[2];
    if (pipe2 (ends, O_CLOEXEC) < 0)
      {
        r = error_set (errno, "%s: cannot make a pipe for the server's "
                       "output: %s", cp->display, strerror (errno));
        goto fail;
      }
    cp->out_read = ends[0];
    cp->out_write = ends[1];
  }
  r = thread_create ("ds-captive-out", &cp->output, NULL, output_thread, cp);
  if (r != 0)
    {
      r = error_set (r, "%s: cannot start the output thread", cp->display);
      goto fail;
    }
  cp->output_started = true;
  r = thread_create ("ds-captive-mon", &cp->monitor, NULL, monitor_thread, cp);
  if (r != 0)
    {
      r = error_set (r, "%s: cannot start the monitor thread", cp->display);
      goto fail;
    }
  cp->monitor_started = true;
  pthread_mutex_lock (&cp->lock);
  while (!cp->spawned)
    pthread_cond_wait (&cp->cond, &cp->lock);
  r = cp->spawn_errno;
  pthread_mutex_unlock (&cp->lock);
  if (r != 0)
    {
      r = error_set (r, "%s: cannot start the server: %s", cp->display,
                     strerror (r));
      goto fail;
    }

  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", cp->sock);
  r = nbd_layer_open_with (ctx, uri, cp->display, captive_free, cp, out);
  if (r < 0)
    goto fail;
  return 0;

 fail:
  captive_free (cp);
  return r;
}
