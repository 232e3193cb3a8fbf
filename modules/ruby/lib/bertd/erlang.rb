# bertd/erlang.rb: a Ruby handler that bertd runs is a process of bertd's Erlang node. Through bertd's
# Erlang link (its socket is in BERTD_ERLANG) it calls Erlang (rpc), holds node connections (connect),
# sends to names and pids (send_message), has a pid (self_pid) and a mailbox (recv_message), and
# registers names whose messages run a block (register_process); Ernie.erlang_* are the same.
# One connection per process, one request at a time on it; a connection that may be out of step is
# closed, never reused, and the next one registers this process's names again.
require 'socket'
require_relative 'codec'
require_relative 'types'

module BERTD
  module Erlang
    # The call did not return normally: bertd could not reach the node, or it answered
    # {badrpc, Reason} (then #reason holds Reason).
    class Error < StandardError
      attr_reader :reason

      def initialize(message, reason = nil)
        super(message)
        @reason = reason
      end
    end

    # recv_message found no message within its timeout.
    class Timeout < Error; end

    # A held connection to an Erlang node (Erlang.connect): bertd keeps it up while this worker
    # lives, and calls through it reuse it.
    class Node
      attr_reader :name

      def initialize(name)
        @name = name.to_sym
      end

      def rpc(mod, fun, args = [], timeout: nil)
        Erlang.rpc(self, mod, fun, args, timeout: timeout)
      end

      def send_message(name, msg)
        Erlang.send_message(BERT::Tuple[name.to_sym, @name], msg)
      end

      def ==(other)
        other.is_a?(Node) && other.name == name
      end

      def inspect
        "#<BERTD::Erlang::Node #{name}>"
      end
    end

    @lock = Mutex.new
    @sock = nil
    @pid = nil
    @processes = {} # name (String) -> callable, for every name this process registered

    class << self
      # Connects bertd to `node` now (or raises Error) and returns a Node handle.
      def connect(node)
        Node.new(request(BERT::Tuple[:connect, node_name(node)]))
      end

      # Calls mod:fun(*args) on `node` (a name, a Node, or nil: bertd's native node) and returns the
      # result. Strings go as binaries; use Symbols for atoms. Raises Error for {badrpc, Reason}, an
      # unreachable node, and after `timeout` seconds (default: bertd's erlang.call_timeout).
      def rpc(node, mod, fun, args = [], timeout: nil)
        req = [:rpc, target(node), mod.to_sym, fun.to_sym, args.to_a]
        req << millis(timeout) if timeout
        result = request(BERT::Tuple[*req])
        if result.is_a?(Array) && result.size == 2 && result[0] == :badrpc
          raise Error.new("badrpc: #{result[1].inspect}", result[1])
        end

        result
      end

      # send_message(dest, msg): dest a name registered on bertd's own node (Symbol or String), a
      # BERT::Tuple[name, node], a BERTD::Pid, or BERT::Tuple[node, number, serial].
      # send_message(node, name, msg): the older form, the process registered as `name` on `node`
      # (nil: bertd's native node).
      def send_message(*args)
        case args.size
        when 2 then request(BERT::Tuple[:send, dest(args[0]), args[1]])
        when 3 then request(BERT::Tuple[:send, target(args[0]), args[1].to_sym, args[2]])
        else raise ArgumentError, 'send_message(dest, msg) or send_message(node, name, msg)'
        end
        nil
      end

      # This worker's pid on bertd's node (a BERTD::Pid), as long as its connection to bertd lasts.
      def self_pid
        request(BERT::Tuple[:self])
      end

      # The next message sent to self_pid, oldest first; waits up to `timeout` seconds (nil: for
      # ever), then raises Timeout.
      def recv_message(timeout = nil)
        got = request(BERT::Tuple[:recv, millis(timeout)])
        return got[1] if got.is_a?(Array) && got.size == 2 && got[0] == :message
        raise Timeout, "no message within #{timeout} s" if got == :timeout

        raise Error, "unexpected answer from bertd's Erlang link: #{got.inspect}"
      end

      # Registers `name` on bertd's node for this worker's module: {name, BertdNode} ! Msg then runs
      # the block (or callable) with Msg on one of the module's workers, as a cast; register it in
      # code every worker runs. A name another module holds raises Error.
      def register_process(name, callable = nil, &block)
        body = callable || block
        raise ArgumentError, 'register_process needs a block or a callable' unless body

        request(BERT::Tuple[:register, name.to_sym])
        @processes[name.to_s] = body
        nil
      end

      # The callable registered for `name` in this process, or nil (Ernie's loop uses it).
      def process_for(name)
        @processes[name.to_s]
      end

      private

      def target(node)
        node.nil? ? nil : node_name(node)
      end

      def node_name(node)
        node.is_a?(Node) ? node.name : node.to_sym
      end

      def dest(value)
        case value
        when BERTD::Pid then value
        when Array
          if value.size == 2
            BERT::Tuple[value[0].to_sym, node_name(value[1])]
          elsif value.size == 3
            BERT::Tuple[node_name(value[0]), Integer(value[1]), Integer(value[2])]
          else
            raise ArgumentError, "a destination tuple has 2 or 3 elements, not #{value.size}"
          end
        else value.to_sym
        end
      end

      def millis(timeout)
        return :infinity if timeout.nil?
        raise ArgumentError, 'timeout must be nil or at least 0' if timeout.negative?

        (timeout * 1000).ceil
      end

      def address
        addr = ENV['BERTD_ERLANG']
        if addr.nil? || addr.empty?
          raise Error, 'BERTD_ERLANG is not set: run this handler under bertd with Erlang enabled'
        end

        addr.start_with?('@') ? "\0#{addr[1..]}" : addr
      end

      def connection
        return @sock unless @sock.nil? || @pid != Process.pid

        @sock = nil
        begin
          sock = UNIXSocket.new(address)
          # A new connection is a new identity: names registered through a lost one come back.
          @processes.each_key { |name| answer_of(exchange(sock, BERT::Tuple[:register, name.to_sym])) }
        rescue StandardError => e
          sock&.close
          raise e.is_a?(SystemCallError) ? Error.new("cannot reach bertd's Erlang link: #{e.message}") : e
        end
        @sock = sock
        @pid = Process.pid
        sock
      end

      def exchange(sock, term)
        sock.write(BERTD::Codec.frame(term))
        header = sock.read(4)
        raise Error, "bertd's Erlang link closed the connection" if header.nil? || header.bytesize < 4

        body = sock.read(header.unpack1('N'))
        raise Error, "bertd's Erlang link closed the connection" if body.nil?

        BERTD::Codec.decode(body)
      end

      def request(term)
        answer = @lock.synchronize do
          sock = connection
          begin
            exchange(sock, term)
          rescue StandardError
            sock.close
            @sock = nil
            raise
          end
        end
        answer_of(answer)
      end

      def answer_of(answer)
        return answer[1] if answer.is_a?(Array) && answer.size == 2 && answer[0] == :reply

        if answer.is_a?(Array) && answer.size == 2 && answer[0] == :error
          detail = answer[1]
          raise Error, (detail.is_a?(Array) && detail.size == 5 ? detail[3].to_s : detail.inspect)
        end
        raise Error, "unexpected answer from bertd's Erlang link: #{answer.inspect}"
      end
    end
  end
end
