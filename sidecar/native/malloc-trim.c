/*
 * The sidecar's native memory calls (sidecar/proxy/malloc-trim.ts), three of them; the first two
 * for its idle-time collection (sidecar/proxy/idle-gc.ts):
 *
 * lowMemoryNotification(): node::LowMemoryNotification() from node.h, which tells V8 the
 * system is low on memory: full collections until one frees nothing more, the young
 * generation shrunk back to its starting size, free pages unmapped. What V8's own memory
 * reducer does a few seconds after start, and not again after a load (it waits for the old
 * generation to have grown by 10 MB); a gc() from JavaScript leaves the young generation at
 * the size the load grew it to. Declared weak: a runtime without it loads the module anyway
 * and the call says false.
 *
 * mallocTrim(): glibc's malloc_trim(0). Under load the sidecar's native allocations (HTTP/2
 * frames, buffers, compiler zones) spread through malloc's heaps; once freed, glibc keeps
 * the pages unless they sit at a heap's top, so the RSS stays ~14 MB above idle after a load
 * has passed. malloc_trim(0) gives every wholly free page back to the kernel, except the
 * free top of the arenas of threads other than the main one.
 *
 * setTrimThreshold(bytes): mallopt(M_TRIM_THRESHOLD, bytes), when the sidecar starts. A
 * free top larger than this goes back to the kernel as memory is freed, in every arena.
 * glibc raises the threshold by itself (up to 64 MB) each time a chunk it had mmap'd is
 * freed, which a load does; the arenas of V8's helper threads then kept their tops resident
 * after it (~1 MB each), where malloc_trim does not reach. Setting it stops the raising.
 *
 * A Node-API module (ABI-stable across Node versions) that declares the Node-API calls it
 * uses instead of including node_api.h: it builds with a C compiler alone, no headers or
 * node-gyp (scripts/build-sidecar.mjs: cc -shared -fPIC). The calls resolve against the node
 * binary when the module is loaded. Only where malloc_trim exists (glibc); elsewhere the build
 * or the load fails and the sidecar runs without it.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef napi_value (*napi_callback)(napi_env env, napi_callback_info info);

extern int napi_create_function(napi_env env, const char *name, size_t length, napi_callback cb, void *data,
                                napi_value *result);
extern int napi_set_named_property(napi_env env, napi_value object, const char *name, napi_value value);
extern int napi_get_boolean(napi_env env, bool value, napi_value *result);
extern int napi_get_cb_info(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                            napi_value *this_arg, void **data);
extern int napi_get_value_int32(napi_env env, napi_value value, int32_t *result);

/* node::LowMemoryNotification(), a C++ function of node.h: its mangled name, no arguments. */
extern void _ZN4node21LowMemoryNotificationEv(void) __attribute__((weak));

/* Returns true when memory was given back to the kernel. */
static napi_value malloc_trim_js(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result = NULL;
  napi_get_boolean(env, malloc_trim(0) == 1, &result);
  return result;
}

/* setTrimThreshold(bytes): true when glibc took it (bytes a positive integer). */
static napi_value set_trim_threshold_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  int32_t bytes = 0;
  bool done = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == 0 && argc >= 1 &&
              napi_get_value_int32(env, argv[0], &bytes) == 0 && bytes > 0 &&
              mallopt(M_TRIM_THRESHOLD, bytes) == 1;
  napi_value result = NULL;
  napi_get_boolean(env, done, &result);
  return result;
}

/* Returns true when node had the call (and made it). */
static napi_value low_memory_notification_js(napi_env env, napi_callback_info info) {
  (void)info;
  bool present = _ZN4node21LowMemoryNotificationEv != NULL;
  if (present) _ZN4node21LowMemoryNotificationEv();
  napi_value result = NULL;
  napi_get_boolean(env, present, &result);
  return result;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "mallocTrim", 10, malloc_trim_js, NULL, &fn) == 0)
    napi_set_named_property(env, exports, "mallocTrim", fn);
  if (napi_create_function(env, "lowMemoryNotification", 21, low_memory_notification_js, NULL, &fn) == 0)
    napi_set_named_property(env, exports, "lowMemoryNotification", fn);
  if (napi_create_function(env, "setTrimThreshold", 16, set_trim_threshold_js, NULL, &fn) == 0)
    napi_set_named_property(env, exports, "setTrimThreshold", fn);
  return exports;
}
