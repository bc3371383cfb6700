/*
 * ctnet's native addon: the few kernel calls Node cannot make itself.
 *
 * Network namespaces are per thread. Every function here switches only the calling thread and
 * switches it back before returning, so JavaScript never observes a switched thread unless it
 * called setns() itself. If switching back fails the thread is left in an unknown namespace and
 * every later kernel call could hit the wrong one (host rules applied inside a container, or the
 * reverse); that is not recoverable, so the process aborts instead of throwing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <node_api.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#ifdef HAVE_LIBNFTABLES
#include <nftables/libnftables.h>
#endif

#define SELF_NETNS "/proc/thread-self/ns/net"
#define MAX_PATH 4096
#define MAX_ADDR 64

static void throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  char msg[MAX_PATH + 256];
  const char *name = strerrorname_np(err);
  char code[32];
  snprintf(code, sizeof code, "%s", name ? name : "EUNKNOWN");
  if (path)
    snprintf(msg, sizeof msg, "%s %s: %s (%s)", syscall, path, strerror(err), code);
  else
    snprintf(msg, sizeof msg, "%s: %s (%s)", syscall, strerror(err), code);
  napi_value jcode, jmsg, error, jerrno, jsyscall;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_error(env, jcode, jmsg, &error);
  napi_create_int32(env, -err, &jerrno);
  napi_set_named_property(env, error, "errno", jerrno);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsyscall);
  napi_set_named_property(env, error, "syscall", jsyscall);
  if (path) {
    napi_value jpath;
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &jpath);
    napi_set_named_property(env, error, "path", jpath);
  }
  napi_throw(env, error);
}

/* Returns false with a pending JS exception when the arguments do not match. */
static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return false;
  }
  return true;
}

static bool get_int(napi_env env, napi_value v, const char *what, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  return true;
}

static bool get_str(napi_env env, napi_value v, const char *what, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a string", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  if (len + 1 >= size) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s is too long", what);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  return true;
}

static void restore_or_die(int saved) {
  if (setns(saved, CLONE_NEWNET) != 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "cannot switch the thread back to its network namespace: %s",
             strerror(errno));
    napi_fatal_error("ctnet", NAPI_AUTO_LENGTH, msg, NAPI_AUTO_LENGTH);
  }
  close(saved);
}

/*
 * Moves the thread into the namespace at path; *saved receives an fd of the previous one.
 * On failure nothing has changed, errno is set and *failed names the syscall.
 */
static int enter_netns(const char *path, int *saved, const char **failed) {
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    *failed = "open";
    return -1;
  }
  *saved = open(SELF_NETNS, O_RDONLY | O_CLOEXEC);
  if (*saved < 0) {
    int err = errno;
    close(target);
    errno = err;
    *failed = "open " SELF_NETNS;
    return -1;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int err = errno;
    close(target);
    close(*saved);
    errno = err;
    *failed = "setns";
    return -1;
  }
  close(target);
  return 0;
}

static napi_value js_setns(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, nstype;
  if (!get_args(env, info, 2, argv) || !get_int(env, argv[0], "fd", &fd) ||
      !get_int(env, argv[1], "nstype", &nstype))
    return NULL;
  if (setns(fd, nstype) != 0) throw_errno(env, errno, "setns", NULL);
  return NULL;
}

static napi_value js_netns_create(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[MAX_PATH];
  if (!get_args(env, info, 1, argv) || !get_str(env, argv[0], "path", path, sizeof path)) return NULL;

  /* O_EXCL: an existing file is either a live namespace or someone else's; never take it over. */
  int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "open", path);
    return NULL;
  }
  close(fd);

  int saved = open(SELF_NETNS, O_RDONLY | O_CLOEXEC);
  if (saved < 0) {
    int err = errno;
    unlink(path);
    throw_errno(env, err, "open", SELF_NETNS);
    return NULL;
  }
  if (unshare(CLONE_NEWNET) != 0) {
    int err = errno;
    close(saved);
    unlink(path);
    throw_errno(env, err, "unshare", NULL);
    return NULL;
  }
  /* The bind mount is what keeps the namespace alive once this thread leaves it. */
  if (mount(SELF_NETNS, path, "none", MS_BIND, NULL) != 0) {
    int err = errno;
    restore_or_die(saved);
    unlink(path);
    throw_errno(env, err, "mount", path);
    return NULL;
  }
  restore_or_die(saved);
  return NULL;
}

static napi_value js_netns_delete(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[MAX_PATH];
  if (!get_args(env, info, 1, argv) || !get_str(env, argv[0], "path", path, sizeof path)) return NULL;

  /* Loop: a path mounted twice (e.g. by a crashed earlier attempt) stays busy after one umount.
     EINVAL means nothing (more) is mounted there. */
  while (umount2(path, MNT_DETACH) == 0);
  if (errno != EINVAL && errno != ENOENT) {
    throw_errno(env, errno, "umount2", path);
    return NULL;
  }
  if (unlink(path) != 0 && errno != ENOENT) throw_errno(env, errno, "unlink", path);
  return NULL;
}

static napi_value js_socket_in_netns(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[MAX_PATH];
  int32_t domain, type, protocol;
  if (!get_args(env, info, 4, argv) || !get_str(env, argv[0], "nsPath", path, sizeof path) ||
      !get_int(env, argv[1], "domain", &domain) || !get_int(env, argv[2], "type", &type) ||
      !get_int(env, argv[3], "protocol", &protocol))
    return NULL;

  int saved;
  const char *failed;
  if (enter_netns(path, &saved, &failed) != 0) {
    throw_errno(env, errno, failed, path);
    return NULL;
  }
  int fd = socket(domain, type | SOCK_CLOEXEC, protocol);
  int err = errno;
  restore_or_die(saved);
  if (fd < 0) {
    throw_errno(env, err, "socket", NULL);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

/*
 * A socket created, bound and (for TCP) listening inside a namespace, for Node to adopt with
 * dgram bind({fd}) or net listen({fd}). Node binds on a later tick, after the thread has switched
 * back, so the bind must happen here. Addresses are resolved in the socket's namespace, so only
 * socket() needs the switch; bind/listen run after switching back.
 */
static napi_value js_bound_socket_in_netns(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[MAX_PATH], kind[8], addr[MAX_ADDR];
  int32_t port;
  if (!get_args(env, info, 4, argv) || !get_str(env, argv[0], "nsPath", path, sizeof path) ||
      !get_str(env, argv[1], "kind", kind, sizeof kind) ||
      !get_str(env, argv[2], "address", addr, sizeof addr) || !get_int(env, argv[3], "port", &port))
    return NULL;

  int domain, type;
  if (strcmp(kind, "udp4") == 0) domain = AF_INET, type = SOCK_DGRAM;
  else if (strcmp(kind, "tcp4") == 0) domain = AF_INET, type = SOCK_STREAM;
  else if (strcmp(kind, "udp6") == 0) domain = AF_INET6, type = SOCK_DGRAM;
  else if (strcmp(kind, "tcp6") == 0) domain = AF_INET6, type = SOCK_STREAM;
  else {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "kind must be udp4, tcp4, udp6 or tcp6");
    return NULL;
  }
  if (port < 0 || port > 65535) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "port must be 0..65535");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  if (domain == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "address is not an IPv4 address");
      return NULL;
    }
    sslen = sizeof *sin;
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "address is not an IPv6 address");
      return NULL;
    }
    sslen = sizeof *sin6;
  }

  int saved;
  const char *failed;
  if (enter_netns(path, &saved, &failed) != 0) {
    throw_errno(env, errno, failed, path);
    return NULL;
  }
  int fd = socket(domain, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int err = errno;
  restore_or_die(saved);
  if (fd < 0) {
    throw_errno(env, err, "socket", NULL);
    return NULL;
  }
  int one = 1;
  /* TCP: a restarted listener must not wait out TIME_WAIT of the previous one. */
  if (type == SOCK_STREAM && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    err = errno;
    close(fd);
    throw_errno(env, err, "setsockopt", NULL);
    return NULL;
  }
  if (domain == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
    err = errno;
    close(fd);
    throw_errno(env, err, "setsockopt", NULL);
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&ss, sslen) != 0) {
    err = errno;
    close(fd);
    throw_errno(env, err, "bind", addr);
    return NULL;
  }
  if (type == SOCK_STREAM && listen(fd, SOMAXCONN) != 0) {
    err = errno;
    close(fd);
    throw_errno(env, err, "listen", addr);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

#ifdef HAVE_LIBNFTABLES
/*
 * libnftables opens its netlink socket in nft_ctx_new(), in the namespace the thread is in at
 * that moment, and keeps using it whatever namespace the thread is in later (measured with
 * nftables 1.0.6). So one context is kept only for the namespace the thread was in when the addon
 * was loaded (the daemon's own), recognised by the namespace's inode (~1 µs); in any other
 * namespace a context is made for the call and freed. Reuse saves ~45 µs of ~130 µs per element
 * add. Keeping a context for a sandbox's namespace instead would pin that namespace after its
 * deletion.
 */
struct nft_home {
  struct nft_ctx *ctx;
  dev_t dev;
  ino_t ino;
};

/* Per Node environment (main thread or Worker), so threads never share a context. */
static void free_home(napi_env env, void *data, void *hint) {
  struct nft_home *home = data;
  if (home->ctx) nft_ctx_free(home->ctx);
  free(home);
}

static struct nft_ctx *new_ctx(void) {
  struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return NULL;
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    return NULL;
  }
  return ctx;
}

static napi_value js_nft_run(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t len;
  if (!get_args(env, info, 1, argv)) return NULL;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "text must be a string");
    return NULL;
  }
  char *text = malloc(len + 1);
  if (!text) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], text, len + 1, &len);

  struct stat st;
  if (stat(SELF_NETNS, &st) != 0) {
    int err = errno;
    free(text);
    throw_errno(env, err, "stat", SELF_NETNS);
    return NULL;
  }
  struct nft_home *h = NULL;
  napi_get_instance_data(env, (void **)&h);
  struct nft_ctx *ctx;
  bool home = h && st.st_dev == h->dev && st.st_ino == h->ino;
  ctx = home && h->ctx ? h->ctx : new_ctx();
  if (!ctx) {
    free(text);
    throw_errno(env, errno ? errno : ENOMEM, "nft_ctx_new", NULL);
    return NULL;
  }
  if (home) h->ctx = ctx;

  int rc = nft_run_cmd_from_buffer(ctx, text);
  free(text);
  /* The buffers are reset by the next get, so read both exactly once per run. */
  const char *out = nft_ctx_get_output_buffer(ctx);
  const char *err = nft_ctx_get_error_buffer(ctx);
  napi_value result, ok, output, error;
  napi_create_object(env, &result);
  napi_get_boolean(env, rc == 0, &ok);
  napi_create_string_utf8(env, out ? out : "", NAPI_AUTO_LENGTH, &output);
  napi_create_string_utf8(env, err ? err : "", NAPI_AUTO_LENGTH, &error);
  napi_set_named_property(env, result, "ok", ok);
  napi_set_named_property(env, result, "output", output);
  napi_set_named_property(env, result, "error", error);
  if (!home) nft_ctx_free(ctx);
  return result;
}
#endif


/*
 * Process start and exit, for containers. posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK)
 * costs the same whatever the daemon's size, where fork() copies its page tables: with a few
 * hundred containers Node's own spawn became the slowest step of a start. The child gets only
 * stdin (/dev/null), stdout and stderr: every other descriptor of the daemon (netlink sockets in
 * the host namespace, DNS listeners, pipes) is closed, so none leaks into a container.
 */

#define MAX_ARGS 4096

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Reads a JS string array into a NULL-terminated vector; NULL with a pending exception on error. */
static char **get_strv(napi_env env, napi_value arr, const char *what) {
  uint32_t n;
  if (napi_get_array_length(env, arr, &n) != napi_ok || n > MAX_ARGS) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be an array of at most %d strings", what, MAX_ARGS);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
  }
  char **v = calloc(n + 1, sizeof *v);
  if (!v) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    size_t len;
    if (napi_get_element(env, arr, i, &item) != napi_ok ||
        napi_get_value_string_utf8(env, item, NULL, 0, &len) != napi_ok) {
      free_strv(v, i);
      char msg[128];
      snprintf(msg, sizeof msg, "%s must contain only strings", what);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
      return NULL;
    }
    v[i] = malloc(len + 1);
    if (!v[i]) {
      free_strv(v, i);
      throw_errno(env, ENOMEM, "malloc", NULL);
      return NULL;
    }
    napi_get_value_string_utf8(env, item, v[i], len + 1, &len);
  }
  return v;
}

static void free_nstrv(char **v) {
  size_t n = 0;
  while (v[n]) n++;
  free_strv(v, n);
}

/* A command line and environment for a spawn: false with a pending exception on bad input. */
static bool get_command(napi_env env, napi_value jargv, napi_value jenv, char ***args, char ***envp) {
  *args = get_strv(env, jargv, "argv");
  if (!*args) return false;
  if (!(*args)[0]) {
    free(*args);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "argv must not be empty");
    return false;
  }
  *envp = get_strv(env, jenv, "env");
  if (!*envp) {
    free_nstrv(*args);
    return false;
  }
  return true;
}

/* spawnDetached(argv: string[], env: string[], stdoutFd: number, stderrFd: number): number (pid) */
static napi_value js_spawn_detached(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  int32_t out_fd, err_fd;
  if (!get_int(env, argv[2], "stdoutFd", &out_fd) || !get_int(env, argv[3], "stderrFd", &err_fd)) return NULL;
  char **args, **envp;
  if (!get_command(env, argv[0], argv[1], &args, &envp)) return NULL;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  /* A session of its own: the daemon's terminal signals and process group never reach it. */
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &fa, &attr, args, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  char path[MAX_PATH];
  snprintf(path, sizeof path, "%s", args[0]);
  free_nstrv(args);
  free_nstrv(envp);
  if (rc != 0) {
    throw_errno(env, rc, "posix_spawnp", path);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, pid, &result);
  return result;
}

/*
 * watchExit(pid: number, callback: (code: number, signal: number) => void): void
 * Calls back once when the process exits: a pidfd polled on the event loop, so thousands of
 * containers cost no timer. For a child of the daemon the exit status is collected (and the
 * zombie reaped); for any other process (containers adopted after a daemon restart) code and
 * signal are -1. The watch does not keep the event loop alive.
 */
struct exit_watch {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int pidfd;
  pid_t pid;
};

static void exit_watch_closed(uv_handle_t *handle) {
  free(handle->data);
}

static void exit_watch_fired(uv_poll_t *poll, int status, int events) {
  struct exit_watch *w = poll->data;
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int code = -1, sig = -1;
  if (waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0) {
    if (si.si_code == CLD_EXITED) code = si.si_status;
    else sig = si.si_status;
  }
  uv_poll_stop(poll);
  close(w->pidfd);
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, args[2], ignored;
  napi_get_reference_value(env, w->callback, &cb);
  /* napi_make_callback wants an object as receiver. */
  napi_get_global(env, &recv);
  napi_create_int32(env, code, &args[0]);
  napi_create_int32(env, sig, &args[1]);
  if (napi_make_callback(env, w->async, recv, cb, 2, args, &ignored) == napi_pending_exception) {
    /* An exception in the callback must not vanish: surface it like any uncaught one. */
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->async);
  napi_close_handle_scope(env, scope);
  uv_close((uv_handle_t *)poll, exit_watch_closed);
}

static napi_value js_watch_exit(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t pid;
  if (!get_int(env, argv[0], "pid", &pid)) return NULL;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    throw_errno(env, errno, "pidfd_open", NULL);
    return NULL;
  }
  struct exit_watch *w = calloc(1, sizeof *w);
  uv_loop_t *loop;
  if (!w || napi_get_uv_event_loop(env, &loop) != napi_ok) {
    free(w);
    close(pidfd);
    throw_errno(env, ENOMEM, "watchExit", NULL);
    return NULL;
  }
  w->env = env;
  w->pidfd = pidfd;
  w->pid = pid;
  napi_value name, resource;
  napi_create_string_utf8(env, "ctnet.watchExit", NAPI_AUTO_LENGTH, &name);
  napi_create_object(env, &resource);
  napi_async_init(env, resource, name, &w->async);
  napi_create_reference(env, argv[1], 1, &w->callback);
  int rc = uv_poll_init(loop, &w->poll, pidfd);
  if (rc == 0) {
    w->poll.data = w;
    rc = uv_poll_start(&w->poll, UV_READABLE, exit_watch_fired);
    if (rc != 0) uv_close((uv_handle_t *)&w->poll, NULL);
  }
  if (rc != 0) {
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->async);
    close(pidfd);
    free(w);
    throw_errno(env, -rc, "uv_poll_start", NULL);
    return NULL;
  }
  uv_unref((uv_handle_t *)&w->poll);
  return NULL;
}

/* mount(source, target, fstype, flags, data): the container root filesystem is built with a handful
 * of mounts (overlay, binds, tmpfs); one syscall each instead of spawning mount(8). */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  char source[MAX_PATH], target[MAX_PATH], fstype[64], data[MAX_PATH];
  int32_t flags;
  if (!get_str(env, argv[0], "source", source, sizeof source) ||
      !get_str(env, argv[1], "target", target, sizeof target) ||
      !get_str(env, argv[2], "fstype", fstype, sizeof fstype) || !get_int(env, argv[3], "flags", &flags) ||
      !get_str(env, argv[4], "data", data, sizeof data))
    return NULL;
  if (mount(source, target, fstype[0] ? fstype : NULL, (unsigned long)(uint32_t)flags, data[0] ? data : NULL) != 0) {
    throw_errno(env, errno, "mount", target);
    return NULL;
  }
  return NULL;
}

/* umount2(target, flags); a target that is not mounted (EINVAL) or missing (ENOENT) is not an error. */
static napi_value js_umount(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char target[MAX_PATH];
  int32_t flags;
  if (!get_str(env, argv[0], "target", target, sizeof target) || !get_int(env, argv[1], "flags", &flags))
    return NULL;
  if (umount2(target, flags) != 0 && errno != EINVAL && errno != ENOENT) {
    throw_errno(env, errno, "umount2", target);
    return NULL;
  }
  return NULL;
}

/*
 * Pseudo-terminals for `docker exec -t`. Node has no pty of its own and ctnet takes no npm
 * dependency for it: openpty() hands out the pair, spawnStdio() starts a process on the slave as
 * its controlling terminal, ptyResize() passes the client's window size on.
 */

/* { master, slave }: a pseudo-terminal's two descriptors, as both openpty calls return them. */
static napi_value pty_pair(napi_env env, int master, int slave) {
  napi_value result, jmaster, jslave;
  napi_create_object(env, &result);
  napi_create_int32(env, master, &jmaster);
  napi_create_int32(env, slave, &jslave);
  napi_set_named_property(env, result, "master", jmaster);
  napi_set_named_property(env, result, "slave", jslave);
  return result;
}

/*
 * openpty(): { master, slave }. Both are close-on-exec so no other child inherits them. The
 * master is non-blocking: libuv's tty handle keeps a master's mode as it finds it, and a blocking
 * master would stall the event loop on a full read buffer or a child that does not read its input.
 */
static napi_value js_openpty(napi_env env, napi_callback_info info) {
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (master < 0) {
    throw_errno(env, errno, "posix_openpt", NULL);
    return NULL;
  }
  char name[MAX_PATH];
  const char *failed = NULL;
  if (grantpt(master) != 0) failed = "grantpt";
  else if (unlockpt(master) != 0) failed = "unlockpt";
  else if (ptsname_r(master, name, sizeof name) != 0) failed = "ptsname_r";
  if (failed) {
    int err = errno;
    close(master);
    throw_errno(env, err, failed, NULL);
    return NULL;
  }
  int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    int err = errno;
    close(master);
    throw_errno(env, err, "open", name);
    return NULL;
  }
  return pty_pair(env, master, slave);
}

/* ptyResize(fd, rows, cols): the kernel sends SIGWINCH to the terminal's foreground process group. */
static napi_value js_pty_resize(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  int32_t fd, rows, cols;
  if (!get_int(env, argv[0], "fd", &fd) || !get_int(env, argv[1], "rows", &rows) ||
      !get_int(env, argv[2], "cols", &cols))
    return NULL;
  if (rows < 0 || rows > 0xffff || cols < 0 || cols > 0xffff) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "rows and cols must be between 0 and 65535");
    return NULL;
  }
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) {
    throw_errno(env, errno, "ioctl TIOCSWINSZ", NULL);
    return NULL;
  }
  return NULL;
}

/*
 * Interactive containers (`docker run -i`, `-t`). The daemon relays a container's standard streams
 * through a pseudo-terminal or pipes; the process that started the container (the runner) keeps a
 * copy of the daemon's ends, so a restarted daemon takes them back with pidfdGetfd() and the
 * container never sees its terminal hang up or its output pipe break.
 */

/* pipe(): [readFd, writeFd], both close-on-exec. */
static napi_value js_pipe(napi_env env, napi_callback_info info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    throw_errno(env, errno, "pipe2", NULL);
    return NULL;
  }
  napi_value result, r, w;
  napi_create_array_with_length(env, 2, &result);
  napi_create_int32(env, fds[0], &r);
  napi_create_int32(env, fds[1], &w);
  napi_set_element(env, result, 0, r);
  napi_set_element(env, result, 1, w);
  return result;
}

/*
 * openptyIn(ptmxPath): { master, slave } from the devpts instance of that ptmx (a container's own
 * /dev/pts, so the terminal is /dev/pts/N inside it). ptsname() would name a terminal of the
 * host's instance: the slave is opened from the master with TIOCGPTPEER instead. Both ends are
 * close-on-exec; the master is non-blocking, as openpty()'s.
 */
static napi_value js_openpty_in(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char ptmx[MAX_PATH];
  if (!get_str(env, argv[0], "ptmxPath", ptmx, sizeof ptmx)) return NULL;
  int master = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (master < 0) {
    throw_errno(env, errno, "open", ptmx);
    return NULL;
  }
  if (unlockpt(master) != 0) {
    int err = errno;
    close(master);
    throw_errno(env, err, "unlockpt", ptmx);
    return NULL;
  }
  int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    int err = errno;
    close(master);
    throw_errno(env, err, "ioctl TIOCGPTPEER", ptmx);
    return NULL;
  }
  return pty_pair(env, master, slave);
}

#define MAX_STDIO 16

/*
 * spawnStdio(argv, env, fds: number[], ctty: boolean): number (pid)
 * posix_spawn in a new session where descriptor i of the child is fds[i] (-1: /dev/null) and
 * nothing else is inherited. The sources are first copied above the targets, so that one source
 * cannot be overwritten by another's dup2. With ctty, descriptor 0 is a terminal that becomes the
 * session's controlling terminal: it is reopened through /proc/self/fd after setsid(), since
 * opening a terminal is the only way posix_spawn has to acquire one, and its name may belong to
 * another devpts instance.
 */
static napi_value js_spawn_stdio(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint32_t n;
  if (napi_get_array_length(env, argv[2], &n) != napi_ok || n < 3 || n > MAX_STDIO) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fds must be an array of 3 to 16 descriptors");
    return NULL;
  }
  bool ctty;
  if (napi_get_value_bool(env, argv[3], &ctty) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "ctty must be a boolean");
    return NULL;
  }
  int high[MAX_STDIO];
  for (uint32_t i = 0; i < n; i++) high[i] = -1;
  int rc = 0;
  const char *failed = NULL;
  for (uint32_t i = 0; i < n && !failed; i++) {
    napi_value item;
    int32_t fd;
    napi_get_element(env, argv[2], i, &item);
    if (napi_get_value_int32(env, item, &fd) != napi_ok) {
      failed = "fds";
      rc = EINVAL;
    } else if (fd >= 0 && (high[i] = fcntl(fd, F_DUPFD_CLOEXEC, (int)n)) < 0) {
      failed = "fcntl F_DUPFD_CLOEXEC";
      rc = errno;
    }
  }
  char **args = NULL, **envp = NULL;
  if (!failed && !get_command(env, argv[0], argv[1], &args, &envp)) {
    for (uint32_t i = 0; i < n; i++)
      if (high[i] >= 0) close(high[i]);
    return NULL;
  }
  pid_t pid = 0;
  char path[MAX_PATH] = "";
  if (!failed) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    char self[64];
    for (uint32_t i = 0; i < n; i++) {
      if (high[i] < 0) {
        posix_spawn_file_actions_addopen(&fa, (int)i, "/dev/null", O_RDWR, 0);
      } else if (i == 0 && ctty) {
        snprintf(self, sizeof self, "/proc/self/fd/%d", high[i]);
        posix_spawn_file_actions_addopen(&fa, 0, self, O_RDWR, 0);
      } else {
        posix_spawn_file_actions_adddup2(&fa, high[i], (int)i);
      }
    }
    posix_spawn_file_actions_addclosefrom_np(&fa, (int)n);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawnp(&pid, args[0], &fa, &attr, args, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    snprintf(path, sizeof path, "%s", args[0]);
    free_nstrv(args);
    free_nstrv(envp);
    if (rc != 0) failed = "posix_spawnp";
  }
  for (uint32_t i = 0; i < n; i++)
    if (high[i] >= 0) close(high[i]);
  if (failed) {
    throw_errno(env, rc, failed, path[0] ? path : NULL);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, pid, &result);
  return result;
}

/* pidfdGetfd(pid, fd): a copy of another process's descriptor (close-on-exec), pidfd_getfd(2). */
static napi_value js_pidfd_getfd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t pid, fd;
  if (!get_int(env, argv[0], "pid", &pid) || !get_int(env, argv[1], "fd", &fd)) return NULL;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    throw_errno(env, errno, "pidfd_open", NULL);
    return NULL;
  }
  int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int err = errno;
  close(pidfd);
  if (copy < 0) {
    throw_errno(env, err, "pidfd_getfd", NULL);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, copy, &result);
  return result;
}

#define EXPORT_FN(name, fn)                                            \
  do {                                                                 \
    napi_value f;                                                      \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);   \
    napi_set_named_property(env, exports, name, f);                    \
  } while (0)

static napi_value init(napi_env env, napi_value exports) {
  EXPORT_FN("setns", js_setns);
  EXPORT_FN("netnsCreate", js_netns_create);
  EXPORT_FN("netnsDelete", js_netns_delete);
  EXPORT_FN("socketInNetns", js_socket_in_netns);
  EXPORT_FN("boundSocketInNetns", js_bound_socket_in_netns);
  EXPORT_FN("spawnDetached", js_spawn_detached);
  EXPORT_FN("watchExit", js_watch_exit);
  EXPORT_FN("mount", js_mount);
  EXPORT_FN("umount", js_umount);
  EXPORT_FN("openpty", js_openpty);
  EXPORT_FN("ptyResize", js_pty_resize);
  EXPORT_FN("pipe", js_pipe);
  EXPORT_FN("openptyIn", js_openpty_in);
  EXPORT_FN("spawnStdio", js_spawn_stdio);
  EXPORT_FN("pidfdGetfd", js_pidfd_getfd);
  napi_value has_nft;
#ifdef HAVE_LIBNFTABLES
  struct nft_home *h = calloc(1, sizeof *h);
  struct stat st;
  if (h && stat(SELF_NETNS, &st) == 0) {
    h->dev = st.st_dev;
    h->ino = st.st_ino;
    napi_set_instance_data(env, h, free_home, NULL);
  } else {
    free(h);
  }
  EXPORT_FN("nftRun", js_nft_run);
  napi_get_boolean(env, true, &has_nft);
#else
  napi_get_boolean(env, false, &has_nft);
#endif
  napi_set_named_property(env, exports, "hasNftables", has_nft);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
