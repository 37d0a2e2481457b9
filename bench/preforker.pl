#!/usr/bin/perl
# preforker.pl - the Perl Cookbook's pre-forking server (recipe 17.12,
# "Pre-Forking Servers"), written for this benchmark from the recipe's text.
#
#     perl bench/preforker.pl PORT
#
# The recipe's design, unchanged: the parent binds one blocking listening
# socket, forks $PREFORK = 5 children and then only sleeps, refilling the
# pool whenever a child dies.  Each child calls accept() on the shared socket
# (blocking accept: the kernel wakes exactly one waiter, so no herd), serves
# one client at a time and exits after $MAX_CLIENTS_PER_CHILD = 5 clients.
# SIGINT makes the parent kill its children and exit (HUNTSMAN).
#
# What a child does with a client is the benchmark's: read one HTTP request
# head and answer "HTTP/1.1 200 OK ... hello" with "Connection: close", then
# close.  A process serving one client at a time cannot honour keep-alive:
# 50 keep-alive clients would hold the 5 children forever and starve the
# other 45 (gunicorn's sync workers close for the same reason), so under the
# keep-alive load this server still costs one connection per request.
#
# Two deliberate differences from the printed code, both only so that the
# benchmark measures the design rather than its accidents:
#   - Listen => 1024 instead of 10, the backlog every server here gets.
#     With 10, wrk's 50 connections overflow the queue and SYN retries
#     (1 s, 3 s) would dominate every latency figure.
#   - The signal races below that lose children are closed; each one is
#     marked "RACE" where the recipe has it.
#
# The recipe's signal races:
#   1. REAPER calls wait() once per SIGCHLD.  Signals do not queue: two
#      children dying close together give one SIGCHLD, so one child stays a
#      zombie, $children is never decremented for it and the pool shrinks by
#      one for good.  With 5 clients per child, children die hundreds of
#      times a second here, and the pool would drain to nothing.  Fixed by
#      reaping in a loop with waitpid(-1, WNOHANG).
#   2. make_new_child blocks only SIGINT across fork(), not SIGCHLD.  A
#      child that dies before the parent has run "$children{$pid} = 1;
#      $children++" is reaped first: REAPER decrements for a pid not yet
#      counted, and the pid is then added to %children after it is gone
#      (HUNTSMAN later signals a stale, possibly reused pid).  Fixed by
#      blocking SIGCHLD too until the bookkeeping is done.
#   3. Lost wake-up: the parent's loop is "sleep; top up".  A SIGCHLD that
#      arrives while it is topping up (outside sleep) is handled, but sleep
#      then waits for the *next* signal, so the pool stays short until
#      another child dies; the top-up loop also reads $children only once.
#      Narrowed by re-reading $children until the pool is full; a death
#      between that check and sleep still waits for the next death.
#   4. "$SIG{CHLD} = \&REAPER" re-installed inside the handler is a relic of
#      System V's one-shot signal(); Perl's sigaction-based handlers stay
#      installed.  Kept, harmless.
#   5. HUNTSMAN sets SIGCHLD to IGNORE, kills the children with SIGINT and
#      exits at once: clients in progress are cut off (no graceful stop),
#      and a child forked concurrently may be missed and live on, orphaned,
#      accepting on the socket it inherited.
use strict;
use warnings;
use IO::Socket::INET;
use POSIX qw(:signal_h :sys_wait_h);

my $port = shift @ARGV or die "usage: $0 PORT\n";

my $server = IO::Socket::INET->new(
    LocalAddr => '127.0.0.1',
    LocalPort => $port,
    Type      => SOCK_STREAM,
    Proto     => 'tcp',
    ReuseAddr => 1,
    Listen    => 1024,
) or die "making socket: $@\n";

my $PREFORK               = 5;    # number of children to maintain
my $MAX_CLIENTS_PER_CHILD = 5;    # number of clients each child should process
my %children = ();                # keys are current child process IDs
my $children = 0;                 # current number of children

my $BODY     = "hello";
my $RESPONSE = "HTTP/1.1 200 OK\r\nContent-Length: " . length($BODY)
  . "\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n$BODY";

sub REAPER {    # takes care of dead children
    $SIG{CHLD} = \&REAPER;    # race 4: a System V relic, harmless
    # RACE 1: the recipe reaps one child per signal ("my $pid = wait").
    while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
        $children-- if delete $children{$pid};
    }
}

sub HUNTSMAN {    # signal handler for SIGINT
    local ($SIG{CHLD}) = 'IGNORE';    # we're going to kill our children
    kill 'INT' => keys %children;     # RACE 5: no graceful stop
    exit;                             # clean up with dignity
}

sub serve {
    my ($client) = @_;
    # Read the request head; the request itself does not matter.
    while (defined(my $line = <$client>)) {
        last if $line =~ /^\r?\n\z/;
    }
    syswrite $client, $RESPONSE;
}

sub make_new_child {
    # RACE 2: the recipe blocks only SIGINT here.
    my $sigset = POSIX::SigSet->new(SIGINT, SIGCHLD);
    sigprocmask(SIG_BLOCK, $sigset)
      or die "Can't block SIGINT and SIGCHLD for fork: $!\n";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid) {
        # Parent records the child's birth and returns.
        $children{$pid} = 1;
        $children++;
        sigprocmask(SIG_UNBLOCK, $sigset)
          or die "Can't unblock SIGINT and SIGCHLD for fork: $!\n";
        return;
    }
    # Child can *not* return from this subroutine.
    $SIG{INT}  = 'DEFAULT';    # make SIGINT kill us as it did before
    $SIG{CHLD} = 'DEFAULT';
    $SIG{TERM} = 'DEFAULT';
    sigprocmask(SIG_UNBLOCK, $sigset)
      or die "Can't unblock signals in the child: $!\n";
    # handle connections until we've reached $MAX_CLIENTS_PER_CHILD
    for (my $i = 0; $i < $MAX_CLIENTS_PER_CHILD; $i++) {
        my $client = $server->accept() or last;
        serve($client);
        close $client;
    }
    # this exit is VERY important, otherwise the child will become
    # a producer of more and more children, forking yourself into
    # process death.
    exit;
}

# Fork off our children.
for (1 .. $PREFORK) {
    make_new_child();
}

# Install signal handlers.
$SIG{CHLD} = \&REAPER;
$SIG{INT}  = \&HUNTSMAN;
$SIG{TERM} = \&HUNTSMAN;

$| = 1;
print "preforker pid $$ listening on 127.0.0.1:$port with $PREFORK children\n";

# And maintain the population.
while (1) {
    sleep;    # wait for a signal (i.e., child's death); RACE 3 is here
    # RACE 3: the recipe reads $children once ("for ($i = $children; ...)").
    while ($children < $PREFORK) {
        make_new_child();    # top up the child pool
    }
}
