# bertd/erlang.rb: calling Erlang from a handler bertd runs, through bertd's Erlang link (its socket
# is in BERTD_ERLANG): Ernie.erlang_rpc(node, mod, fun, args) and Ernie.erlang_send(node, name, msg).
# One connection per process, one request at a time on it; a connection that may be out of step is
# closed, never reused.
require 'socket'
require_relative 'codec'

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

    @lock = Mutex.new
    @sock = nil
    @pid = nil

    class << self
      # Calls mod:fun(*args) on `node` (nil: bertd's native node) and returns the result. Strings go
      # as binaries; use Symbols for atoms. Raises Error for {badrpc, Reason}.
      def rpc(node, mod, fun, args = [])
        result = request(BERT::Tuple[:rpc, target(node), mod.to_sym, fun.to_sym, args.to_a])
        if result.is_a?(Array) && result.size == 2 && result[0] == :badrpc
          raise Error.new("badrpc: #{result[1].inspect}", result[1])
        end

        result
      end

      # Sends msg to the process registered as `name` on `node` (nil: bertd's native node).
      def send_message(node, name, msg)
        request(BERT::Tuple[:send, target(node), name.to_sym, msg])
        nil
      end

      private

      def target(node)
        node.nil? ? nil : node.to_sym
      end

      def address
        addr = ENV['BERTD_ERLANG']
        if addr.nil? || addr.empty?
          raise Error, 'BERTD_ERLANG is not set: run this handler under bertd with Erlang enabled'
        end

        addr.start_with?('@') ? "\0#{addr[1..]}" : addr
      end

      def connection
        if @sock.nil? || @pid != Process.pid
          @sock = UNIXSocket.new(address)
          @pid = Process.pid
        end
        @sock
      rescue SystemCallError => e
        raise Error, "cannot reach bertd's Erlang link: #{e.message}"
      end

      def request(term)
        answer = @lock.synchronize do
          sock = connection
          begin
            sock.write(BERTD::Codec.frame(term))
            header = sock.read(4)
            raise Error, "bertd's Erlang link closed the connection" if header.nil? || header.bytesize < 4

            body = sock.read(header.unpack1('N'))
            raise Error, "bertd's Erlang link closed the connection" if body.nil?

            BERTD::Codec.decode(body)
          rescue StandardError
            sock.close
            @sock = nil
            raise
          end
        end
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
