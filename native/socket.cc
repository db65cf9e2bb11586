// Unix-socket calls the page server needs and Node does not offer: a message with
// descriptors (SCM_RIGHTS) in, one out (the tests' Firecracker-like client), and the
// peer's credentials (SO_PEERCRED). No policy: how many descriptors to take, what to do
// with them and with the bytes is TypeScript's.
#include "common.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace postcopy {

namespace {
uint8_t* Bytes(const Napi::CallbackInfo& info, size_t i, size_t* len) {
  Napi::TypedArray ta = TypedArg(info, i, "a typed array");
  *len = ta.ByteLength();
  return static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
}
}  // namespace

// recvmsg(fd, bytes, maxFds) -> [bytes read, fd, fd, ...], or -1 on EAGAIN.
// Descriptors come with MSG_CMSG_CLOEXEC; a control message cut short (MSG_CTRUNC: more
// descriptors than maxFds) is reported as the extra element -1 after the descriptors the
// kernel did pass, which are still returned so the caller can close them.
static Napi::Value Recvmsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info, 0);
  size_t len = 0;
  uint8_t* buf = Bytes(info, 1, &len);
  uint32_t maxFds = U32(info, 2);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (maxFds > 0 ? maxFds : 1)));
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Num(env, -1);
    ThrowErrno(env, "recvmsg", errno);
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  out.Set(k++, Num(env, static_cast<double>(n)));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t j = 0; j < count; j++) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + j * sizeof(int), sizeof(int));
      out.Set(k++, Num(env, got));
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) out.Set(k++, Num(env, -1));
  return out;
}

// sendmsg(fd, bytes, fds) -> bytes sent, or -1 on EAGAIN.
static Napi::Value Sendmsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info, 0);
  size_t len = 0;
  uint8_t* buf = Bytes(info, 1, &len);
  Napi::Int32Array fds = TypedArg<Napi::Int32Array>(info, 2, napi_int32_array, "an Int32Array of descriptors");
  std::vector<char> control(fds.ElementLength() > 0 ? CMSG_SPACE(sizeof(int) * fds.ElementLength()) : 0);
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fds.ElementLength() > 0) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.ElementLength());
    std::memcpy(CMSG_DATA(c), fds.Data(), sizeof(int) * fds.ElementLength());
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Num(env, -1);
    ThrowErrno(env, "sendmsg", errno);
    return env.Undefined();
  }
  return Num(env, static_cast<double>(n));
}

// getsockopt(fd, SOL_SOCKET, SO_PEERCRED) -> [pid, uid, gid]
static Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ucred cred{};
  socklen_t size = sizeof cred;
  if (getsockopt(I32(info, 0), SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) {
    ThrowErrno(env, "getsockopt(SO_PEERCRED)", errno);
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Num(env, cred.pid));
  out.Set(1u, Num(env, cred.uid));
  out.Set(2u, Num(env, cred.gid));
  return out;
}

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("recvmsg", Napi::Function::New(env, Recvmsg, "recvmsg"));
  exports.Set("sendmsg", Napi::Function::New(env, Sendmsg, "sendmsg"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
}

}  // namespace postcopy
