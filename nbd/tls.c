/* diskshelf nbd: TLS with GnuTLS after NBD_OPT_STARTTLS: X.509 (a
 * directory holding ca-cert.pem, client-cert.pem, client-key.pem) or PSK
 * (a file of username:hexkey lines).  The server is verified by default,
 * over Unix sockets too (chain only there, unless tls-hostname is set,
 * so there an explicit CA is required: the system CAs are not enough). */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

/* True if path names a readable file. */
static bool
readable (const char *path)
{
  return access (path, R_OK) == 0;
}

/* The PSK username: the URI's user@, else the login name. */
static const char *
psk_username (struct nbd_client *c)
{
  const char *u = c->uri->user;
  struct passwd *pw;

  if (u)
    return u;
  u = getenv ("LOGNAME");
  if (u && *u)
    return u;
  pw = getpwuid (getuid ());
  return pw ? pw->pw_name : NULL;
}

/* Load the PSK for our username from the keys file. */
static int
load_psk (struct nbd_client *c)
{
  const char *user = psk_username (c);
  const char *path = c->uri->tls_psk_file;
  FILE *fp;
  char *line = NULL;
  size_t cap = 0, ulen;
  ssize_t n;
  int r = -1;

  if (user == NULL)
    return nbd_set_error (EINVAL, "%s: no PSK username (put user@ in the "
                          "URI)", c->name);
  ulen = strlen (user);
  fp = fopen (path, "re");
  if (fp == NULL)
    return nbd_set_error (errno, "%s: cannot open PSK file %s: %s", c->name,
                          path, strerror (errno));
  while ((n = getline (&line, &cap, fp)) > 0)
    {
      gnutls_datum_t key;
      size_t k;

      while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
      if ((size_t) n <= ulen + 1 || strncmp (line, user, ulen) != 0
          || line[ulen] != ':')
        continue;
      for (k = ulen + 1; k < (size_t) n; k++)
        if (!((line[k] >= '0' && line[k] <= '9')
              || (line[k] >= 'a' && line[k] <= 'f')
              || (line[k] >= 'A' && line[k] <= 'F')))
          break;
      if (k != (size_t) n)
        {
          r = -2;
          break;
        }
      key.data = (unsigned char *) line + ulen + 1;
      key.size = (unsigned) ((size_t) n - ulen - 1);
      if (gnutls_psk_allocate_client_credentials (&c->psk) < 0)
        break;
      r = gnutls_psk_set_client_credentials (c->psk, user, &key,
                                             GNUTLS_PSK_KEY_HEX);
      break;
    }
  /* The key must not linger in freed memory. */
  if (line)
    {
      memset (line, 0, cap);
      free (line);
    }
  fclose (fp);
  if (r == -2)
    return nbd_set_error (EINVAL, "%s: PSK file %s: the key of '%s' is not "
                          "hexadecimal", c->name, path, user);
  if (r < 0)
    return nbd_set_error (ENOENT, "%s: PSK file %s has no key for user '%s' "
                          "(make one with: psktool -u %s -p %s)", c->name,
                          path, user, user, path);
  return 0;
}

/* Load the X.509 trust anchors and optional client certificate. */
static int
load_x509 (struct nbd_client *c)
{
  const char *dir = c->uri->tls_certificates;
  char path[PATH_MAX], key[PATH_MAX];
  int r, trusted = 0;

  if (gnutls_certificate_allocate_credentials (&c->x509) < 0)
    return nbd_set_error (ENOMEM, "%s: out of memory", c->name);
  if (dir)
    {
      snprintf (path, sizeof path, "%s/ca-cert.pem", dir);
      if (readable (path))
        {
          r = gnutls_certificate_set_x509_trust_file (c->x509, path,
                                                      GNUTLS_X509_FMT_PEM);
          if (r < 0)
            return nbd_set_error (EINVAL, "%s: %s: %s", c->name, path,
                                  gnutls_strerror (r));
          trusted += r;
        }
      snprintf (path, sizeof path, "%s/ca-crl.pem", dir);
      if (readable (path))
        {
          r = gnutls_certificate_set_x509_crl_file (c->x509, path,
                                                    GNUTLS_X509_FMT_PEM);
          if (r < 0)
            return nbd_set_error (EINVAL, "%s: %s: %s", c->name, path,
                                  gnutls_strerror (r));
        }
      snprintf (path, sizeof path, "%s/client-cert.pem", dir);
      snprintf (key, sizeof key, "%s/client-key.pem", dir);
      if (readable (path) && readable (key))
        {
          r = gnutls_certificate_set_x509_key_file (c->x509, path, key,
                                                    GNUTLS_X509_FMT_PEM);
          if (r < 0)
            return nbd_set_error (EINVAL, "%s: %s: %s", c->name, path,
                                  gnutls_strerror (r));
        }
    }
  if (c->ca_file)
    {
      r = gnutls_certificate_set_x509_trust_file (c->x509, c->ca_file,
                                                  GNUTLS_X509_FMT_PEM);
      if (r < 0)
        return nbd_set_error (EINVAL, "%s: %s: %s", c->name, c->ca_file,
                              gnutls_strerror (r));
      trusted += r;
    }
  /* Over a Unix or vsock socket no host name is checked unless
   * tls-hostname names one, so the system CAs would accept any
   * certificate they signed for anyone: ask for an explicit CA. */
  if (trusted == 0 && c->verify_peer
      && c->uri->transport != NBD_TRANSPORT_TCP && !c->uri->tls_hostname)
    return nbd_set_error (EACCES, "%s: no CA certificate to verify the "
                          "server over a %s socket (the system CAs would "
                          "accept any certificate they signed, with no host "
                          "name to check): put ca-cert.pem in the "
                          "tls-certificates directory, set ca-file, or add "
                          "tls-hostname=NAME to the URI", c->name,
                          c->uri->transport == NBD_TRANSPORT_UNIX
                          ? "Unix" : "vsock");
  if (trusted == 0)
    {
      r = gnutls_certificate_set_x509_system_trust (c->x509);
      if (r > 0)
        trusted += r;
    }
  if (trusted == 0 && c->verify_peer)
    return nbd_set_error (EINVAL, "%s: no CA certificate to verify the "
                          "server (put ca-cert.pem in the tls-certificates "
                          "directory, or set ca-file)", c->name);
  return 0;
}

/* Load the credentials once for every connection of the client. */
int
nbd_tls_load_credentials (struct nbd_client *c)
{
  if (!c->uri->tls)
    return 0;
  if (c->uri->tls_psk_file)
    return load_psk (c);
  return load_x509 (c);
}

/* Free what nbd_tls_load_credentials loaded. */
void
nbd_tls_free_credentials (struct nbd_client *c)
{
  if (c->x509)
    gnutls_certificate_free_credentials (c->x509);
  if (c->psk)
    gnutls_psk_free_client_credentials (c->psk);
  c->x509 = NULL;
  c->psk = NULL;
}

/* True if name is an IPv4 or IPv6 literal (no SNI for those). */
static bool
is_ip_literal (const char *name)
{
  unsigned char buf[16];

  return inet_pton (AF_INET, name, buf) == 1
         || inet_pton (AF_INET6, name, buf) == 1;
}

/* Run the TLS handshake on conn->fd, right after the STARTTLS ACK. */
int
nbd_tls_handshake (struct nbd_conn *conn)
{
  struct nbd_client *c = conn->client;
  const char *host = c->uri->tls_hostname;
  gnutls_session_t s;
  int r;

  if (host == NULL && c->uri->transport == NBD_TRANSPORT_TCP)
    host = c->uri->host ? c->uri->host : "localhost";

  r = gnutls_init (&s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
  if (r < 0)
    return nbd_set_error (ENOMEM, "%s: gnutls_init: %s", c->name,
                          gnutls_strerror (r));
  if (c->psk)
    {
      r = gnutls_priority_set_direct (s, "NORMAL:-VERS-SSL3.0:-VERS-TLS1.0:"
                                      "-VERS-TLS1.1:+ECDHE-PSK:+DHE-PSK:+PSK",
                                      NULL);
      if (r >= 0)
        r = gnutls_credentials_set (s, GNUTLS_CRD_PSK, c->psk);
    }
  else
    {
      r = gnutls_priority_set_direct (s, "NORMAL:-VERS-SSL3.0:-VERS-TLS1.0:"
                                      "-VERS-TLS1.1", NULL);
      if (r >= 0)
        r = gnutls_credentials_set (s, GNUTLS_CRD_CERTIFICATE, c->x509);
      if (r >= 0 && host && !is_ip_literal (host))
        r = gnutls_server_name_set (s, GNUTLS_NAME_DNS, host, strlen (host));
      /* Verify the chain always, and the name when we know one. */
      if (r >= 0 && c->verify_peer)
        gnutls_session_set_verify_cert (s, host, 0);
    }
  if (r < 0)
    {
      gnutls_deinit (s);
      return nbd_set_error (EINVAL, "%s: TLS setup: %s", c->name,
                            gnutls_strerror (r));
    }
  gnutls_transport_set_int (s, conn->fd);
  gnutls_handshake_set_timeout (s, (unsigned) (c->timeout * 1000));
  do
    r = gnutls_handshake (s);
  while (r < 0 && !gnutls_error_is_fatal (r) && r != GNUTLS_E_AGAIN);
  if (r < 0)
    {
      int err = r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR ? EACCES : EPROTO;
      char why[256] = "";

      if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR)
        {
          gnutls_datum_t out;
          unsigned status = gnutls_session_get_verify_cert_status (s);
          if (gnutls_certificate_verification_status_print
                (status, GNUTLS_CRT_X509, &out, 0) == 0)
            {
              snprintf (why, sizeof why, ": %s", out.data);
              gnutls_free (out.data);
            }
        }
      gnutls_deinit (s);
      return nbd_set_error (err, "%s: TLS handshake failed: %s%s", c->name,
                            gnutls_strerror (r), why);
    }
  conn->tls = s;
  return 0;
}
