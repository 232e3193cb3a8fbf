# bertd/client.rb: a BERT-RPC client for bertd (and any BERT-RPC server), shaped like the bertrpc gem:
# `BERTD::Service.new(host, port).call.ext.add(1, 2)`. It never answers one request with another's
# reply: after a timeout or a broken answer the connection is closed, never reused.
require 'io/wait'
require 'socket'
require_relative 'codec'

module BERTD
  # Base of every error this client raises.
  class Error < StandardError; end

  # The request cannot be sent as asked (bad option, argument that BERT cannot carry).
  class InvalidRequest < Error; end

  # A bad option to Service#call / #cast.
  class InvalidOption < InvalidRequest; end

  # No connection, or it broke before a whole answer came back.
  class ConnectionError < Error
    attr_reader :host, :port

    def initialize(host, port, reason)
      @host = host
      @port = port
      super("#{host}:#{port}: #{reason}")
    end
  end

  # No whole answer within the timeout. The request may still run on the server.
  class ReadTimeoutError < ConnectionError
    attr_reader :timeout

    def initialize(host, port, timeout)
      @timeout = timeout
      super(host, port, "no answer within #{timeout}s")
    end
  end

  # The server answered something that is not a BERT-RPC answer.
  class InvalidReply < Error; end

  # The stand-in for the remote exception, as the bertrpc gem's `original_exception` gives it.
  class RemoteError < StandardError; end

  # An `{error, {Type, Code, Class, Detail, Backtrace}}` answer. `message` is Detail exactly
  # (e.g. "No such module 'failboat'"); the local backtrace stays the Ruby one.
  class RPCError < Error
    attr_reader :type, :code, :remote_class, :remote_backtrace

    def initialize(type, code, remote_class, detail, remote_backtrace)
      @type = type
      @code = code
      @remote_class = remote_class
      @remote_backtrace = remote_backtrace
      super(detail)
    end

    alias klass remote_class

    # bertrpc gem compatibility: an exception that reads like the remote one.
    def original_exception
      err = RemoteError.new("#{remote_class}: #{message}")
      err.set_backtrace(remote_backtrace)
      err
    end
  end

  class ProtocolError < RPCError; end
  class ServerError < RPCError; end
  class UserError < RPCError; end
  class ProxyError < RPCError; end

  ERROR_TYPES = { protocol: ProtocolError, server: ServerError, user: UserError, proxy: ProxyError }.freeze
  PRIORITIES = %i[high low].freeze

  # Where requests go. One TCP connection per request by default, as the bertrpc gem does;
  # `persistent: true` keeps one connection open (answers come back in request order).
  class Service
    attr_reader :host, :port, :timeout, :connect_timeout, :float_format

    # timeout: seconds for the whole answer (nil waits for ever); connect_timeout defaults to it.
    # float_format: the form of the requests' floats, :ernie (FLOAT_EXT, what ruby-bert reads:
    # the default, see BERTD::Codec.float_format) or :new (NEW_FLOAT). Answers are read in either.
    def initialize(host, port, timeout: nil, connect_timeout: nil, persistent: false, float_format: nil)
      @float_format = Codec.float_format_of(float_format || Codec.float_format)
      @host = host
      @port = port
      @timeout = timeout
      @connect_timeout = connect_timeout || timeout
      @persistent = persistent
      @socket = nil
      @lock = Mutex.new
    end

    def persistent?
      @persistent
    end

    # svc.call.mod.fun(*args) -> result. Options: priority: :high|:low, cache: [:validation, token].
    def call(**options)
      Request.new(self, :call, options)
    end

    # svc.cast.mod.fun(*args) -> nil once the server has taken the request.
    def cast(**options)
      Request.new(self, :cast, options)
    end

    # The explicit form, for names that are not Ruby method names:
    # svc.request(:call, :ext, :add, [1, 2], priority: :low).
    def request(kind, mod, fun, args, **options)
      raise InvalidRequest, "kind must be :call or :cast, not #{kind.inspect}" unless %i[call cast].include?(kind)

      payload = frames(infos(options) + [BERT::Tuple[kind, mod.to_sym, fun.to_sym, args]])
      answer = @persistent ? @lock.synchronize { exchange_persistent(payload) } : exchange_once(payload)
      interpret(kind, answer)
    end

    # Sends `payload` (BERT bytes, not checked: it may be malformed) as the request frame after the
    # options' infos, and returns the answer interpreted as for a call (nil for {noreply}). For tools
    # and tests.
    def request_raw(payload, **options)
      payload = frames(infos(options)) + [payload.bytesize].pack('N') + payload.b
      answer = @persistent ? @lock.synchronize { exchange_persistent(payload) } : exchange_once(payload)
      interpret(:call, answer)
    end

    # Closes the persistent connection, if any (a later request opens a new one).
    def close
      @lock.synchronize { drop_socket }
    end

    private

    def infos(options)
      unknown = options.keys - %i[priority cache]
      raise InvalidOption, "unknown option(s) #{unknown.inspect}; valid: :priority, :cache" unless unknown.empty?

      infos = []
      if options.key?(:priority)
        priority = options[:priority]
        raise InvalidOption, 'priority must be :high or :low' unless PRIORITIES.include?(priority)

        infos << BERT::Tuple[:info, :priority, [priority]]
      end
      if options.key?(:cache)
        cache = options[:cache]
        unless cache.is_a?(Array) && cache.size == 2 && cache[0] == :validation && cache[1].is_a?(String)
          raise InvalidOption, 'cache must be [:validation, String]'
        end

        infos << BERT::Tuple[:info, :cache, cache]
      end
      infos
    end

    def frames(terms)
      terms.map { |term| Codec.frame(term, float_format: @float_format) }.join
    rescue StandardError => e
      raise InvalidRequest, "cannot encode request: #{e.message}"
    end

    def exchange_once(payload)
      socket = connect
      begin
        exchange(socket, payload)
      ensure
        socket.close
      end
    end

    def exchange_persistent(payload)
      drop_socket if @socket && stale?(@socket)
      @socket ||= connect
      exchange(@socket, payload)
    rescue StandardError
      # After a timeout the late answer would be read as the next request's: never reuse.
      drop_socket
      raise
    end

    def drop_socket
      @socket&.close
    rescue IOError, SystemCallError
      nil
    ensure
      @socket = nil
    end

    # A kept connection that the server closed (or that has unread bytes) cannot be reused.
    def stale?(socket)
      return false unless socket.wait_readable(0)

      true
    rescue IOError, SystemCallError
      true
    end

    def connect
      Socket.tcp(@host, @port, connect_timeout: @connect_timeout)
    rescue Errno::ETIMEDOUT
      raise ConnectionError.new(@host, @port, "connect timed out after #{@connect_timeout}s")
    rescue SystemCallError, SocketError, IOError => e
      raise ConnectionError.new(@host, @port, "cannot connect (#{e.message})")
    end

    def exchange(socket, payload)
      deadline = @timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout)
      write_all(socket, payload, deadline)
      header = read_exactly(socket, 4, deadline)
      body = read_exactly(socket, header.unpack1('N'), deadline)
      begin
        Codec.decode(body)
      rescue StandardError => e
        raise InvalidReply, "undecodable answer from #{@host}:#{@port}: #{e.message}"
      end
    end

    def write_all(socket, data, deadline)
      until data.empty?
        case (n = socket.write_nonblock(data, exception: false))
        when :wait_writable then wait(socket, :wait_writable, deadline)
        else data = data.byteslice(n..)
        end
      end
    rescue SystemCallError, IOError => e
      raise ConnectionError.new(@host, @port, "write failed (#{e.message})")
    end

    def read_exactly(socket, length, deadline)
      buffer = String.new(capacity: length, encoding: Encoding::BINARY)
      while buffer.bytesize < length
        case (chunk = socket.read_nonblock(length - buffer.bytesize, exception: false))
        when :wait_readable then wait(socket, :wait_readable, deadline)
        when nil then raise ConnectionError.new(@host, @port, 'connection closed before a whole answer')
        else buffer << chunk
        end
      end
      buffer
    rescue SystemCallError, IOError => e
      raise ConnectionError.new(@host, @port, "read failed (#{e.message})")
    end

    def wait(socket, how, deadline)
      left = deadline && (deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC))
      raise ReadTimeoutError.new(@host, @port, @timeout) if left && left <= 0
      raise ReadTimeoutError.new(@host, @port, @timeout) unless socket.public_send(how, left)
    end

    def interpret(kind, answer)
      if answer.is_a?(Array) && answer[0] == :reply && answer.size == 2 && kind == :call
        answer[1]
      elsif answer.is_a?(Array) && answer[0] == :noreply && answer.size == 1
        nil
      elsif answer.is_a?(Array) && answer[0] == :error && answer.size == 2
        raise remote_error(answer[1])
      else
        raise InvalidReply, "unexpected answer to a #{kind}: #{answer.inspect}"
      end
    end

    def remote_error(error)
      unless error.is_a?(Array) && error.size == 5 && ERROR_TYPES.key?(error[0])
        return InvalidReply.new("malformed error answer: #{error.inspect}")
      end

      type, code, klass, detail, trace = error.to_a
      ERROR_TYPES[type].new(type, code, text(klass), text(detail), Array(trace).map { |line| text(line) })
    end

    # Error fields arrive as binaries; they are text, so they read as UTF-8 when they are.
    def text(value)
      value = value.to_s.dup
      utf8 = value.dup.force_encoding(Encoding::UTF_8)
      utf8.valid_encoding? ? utf8 : value
    end
  end

  # svc.call / svc.cast: the next name is the module.
  class Request < BasicObject
    def initialize(service, kind, options)
      @service = service
      @kind = kind
      @options = options
    end

    def method_missing(mod, *args)
      ::Kernel.raise ::ArgumentError, "#{mod} is a module: svc.#{@kind}.#{mod}.function(args)" unless args.empty?

      Mod.new(@service, @kind, @options, mod)
    end

    def respond_to_missing?(_name, _include_private = false)
      true
    end
  end

  # svc.call.mod: the next name is the function, its arguments the request's.
  class Mod < BasicObject
    def initialize(service, kind, options, mod)
      @service = service
      @kind = kind
      @options = options
      @mod = mod
    end

    def method_missing(fun, *args)
      @service.request(@kind, @mod, fun, args, **@options)
    end

    def respond_to_missing?(_name, _include_private = false)
      true
    end
  end
end
