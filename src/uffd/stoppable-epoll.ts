/**
 * The wait every fault-serving thread does: epoll on its userfaultfd and on the eventfd
 * that stops it (node-pty's way to end a blocking loop from outside). Events carry 0 for
 * the userfaultfd and STOP for the eventfd.
 */
import { native } from '../native/binding.js';

const EPOLLIN = 0x1;
const EPOLL_CTL_ADD = 1;
export const STOP = 1;

/** An epoll set of `uffd` (data 0) and `stopFd` (data STOP); returns its descriptor. */
export function stoppableEpoll(uffd: number, stopFd: number): number {
  const epfd = native.epollCreate();
  native.epollCtl(epfd, EPOLL_CTL_ADD, uffd, EPOLLIN, 0);
  native.epollCtl(epfd, EPOLL_CTL_ADD, stopFd, EPOLLIN, STOP);
  return epfd;
}
