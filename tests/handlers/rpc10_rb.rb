# rpc10_rb.rb: a handler on bertd's Ruby library (Ernie's API) that uses its BERT-RPC 1.0 calls,
# module `lib`, for tests/integration/test_rpc10.py. The same functions as rpc10_py.py:
#   sum_stream, head_stream(N), stream_out(N, Size) (an Enumerator), stream_block(N, Size)
#   (Ernie.stream with a block), echo_stream, stream_forever(Size), stream_then_fail(N),
#   stream_fail_first, stream_not_bytes, cached(X), validated(X), bad_cache(How), add(A, B)
require 'zlib'
require 'ernie'

module Lib
  @calls = 0
  class << self
    attr_accessor :calls
  end

  def sum_stream
    stream = Ernie.stream_in
    return [0, 0, 0] unless stream

    count = total = crc = 0
    stream.each do |chunk|
      count += 1
      total += chunk.bytesize
      crc = Zlib.crc32(chunk, crc)
    end
    [count, total, crc]
  end

  def head_stream(n)
    Ernie.stream_in.first(n).map(&:bytesize)
  end

  def stream_out(n, size)
    Enumerator.new do |y|
      n.times { |i| y << (('a'.ord + (i % 26)).chr * size) }
    end
  end

  def stream_block(n, size)
    Ernie.stream(reply: 'block') do |out|
      n.times { |i| out << (('a'.ord + (i % 26)).chr * size) }
    end
  end

  def echo_stream
    input = Ernie.stream_in
    Ernie.stream(reply: 'echo') { |out| input.each { |chunk| out << chunk } }
  end

  def stream_forever(size)
    block = 'f' * size
    Enumerator.new { |y| loop { y << block } }
  end

  def stream_then_fail(n)
    Enumerator.new do |y|
      n.times { y << ('x' * 1000) }
      raise 'the enumerator failed after it began'
    end
  end

  def stream_fail_first
    Enumerator.new { |_| raise KeyError, 'before the first chunk' }
  end

  def stream_not_bytes
    Enumerator.new { |y| y << 42 }
  end

  def cached(x)
    Lib.calls += 1
    Ernie.cache(expiration: 60, access: :public)
    [x, Lib.calls]
  end

  def validated(x)
    Lib.calls += 1
    return Ernie::VALID if Ernie.validation_token == 'v1'

    Ernie.cache(validation: 'v1')
    [x, Lib.calls]
  end

  def bad_cache(how)
    case how
    when 'expiration' then Ernie.cache(expiration: -1)
    when 'access' then Ernie.cache(expiration: 1, access: :everyone)
    when 'token' then Ernie.cache(validation: 42)
    else Ernie.cache
    end
    'unreachable'
  end

  def add(a, b)
    a + b
  end

  def outside_message
    OUTSIDE
  end
end

OUTSIDE = begin
  Ernie.cache(expiration: 1)
rescue RuntimeError => e
  e.message
end

Ernie.expose(:lib, Lib)
