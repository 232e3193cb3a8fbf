# rpc10_client.rb PORT SCENARIO [ARG]: bertd's Ruby client (BERTD::Service) doing one BERT-RPC 1.0
# scenario against module `lib` of a bertd on 127.0.0.1:PORT (tests/integration/test_rpc10.py runs
# it). Prints one line, the scenario's outcome as JSON, and exits 0; any exception is printed as
# {"raised": Class, "message": ...} so the test can assert on it.
require 'json'
require 'stringio'
require 'zlib'
require 'bertd/client'
require 'bertrpc'

port = Integer(ARGV[0])
scenario = ARGV[1]
arg = ARGV[2]
svc = BERTD::Service.new('127.0.0.1', port, timeout: 20)
MIB = 1 << 20

def crc_of(blobs)
  blobs.reduce(0) { |crc, b| Zlib.crc32(b, crc) }
end

out = begin
  case scenario
  when 'stream_in'
    blobs = Array.new(128) { |i| (i % 256).chr.b * 65_536 }
    got = svc.call(stream_in: blobs.each).lib.sum_stream
    { 'got' => got, 'want' => [128, 8 * MIB, crc_of(blobs)] }
  when 'stream_in_io'
    data = Random.new(7).bytes(3 * MIB + 17)
    svc.chunk_size = 100_000
    { 'got' => svc.call(stream_in: StringIO.new(data)).lib.sum_stream, 'want' => [32, data.bytesize, Zlib.crc32(data)] }
  when 'stream_out'
    sizes = []
    letters = []
    answer = svc.call(accept: [:stream]).lib.stream_out(5, 300_000) do |chunk|
      sizes << chunk.bytesize
      letters |= [chunk[0]]
    end
    { 'streamed' => answer.streamed?, 'value' => answer.value, 'total' => sizes.sum, 'max' => sizes.max,
      'letters' => letters.sort }
  when 'gathered'
    { 'got' => svc.call.lib.stream_out(3, 4) }
  when 'persistent'
    kept = BERTD::Service.new('127.0.0.1', port, timeout: 20, persistent: true)
    a = kept.call(accept: :stream).lib.stream_out(2, 10).read
    b = kept.call(stream_in: ['12345']).lib.sum_stream.first(2)
    { 'got' => [a, b, kept.call.lib.add(2, 2)] }
  when 'echo'
    blobs = Array.new(20) { |i| Random.new(i).bytes(50_000) }
    answer = svc.call(stream_in: blobs, accept: [:stream]).lib.echo_stream
    { 'value' => answer.value, 'same' => answer.read == blobs.join }
  when 'cache'
    answer = svc.call(accept: [:cache]).lib.cached(7)
    plain = svc.call.lib.cached(8)
    { 'cache' => answer.cache.transform_keys(&:to_s).transform_values(&:to_s), 'value' => answer.value[0],
      'plain' => plain[0] }
  when 'validation'
    first = svc.call(accept: [:cache]).lib.validated(1)
    again = svc.call(validation: first.cache[:validation]).lib.validated(1)
    stale = svc.call(validation: 'v0').lib.validated(2)
    # The bertrpc gem's form of the same packet: [info, cache, [validation, Token]].
    gem = BERTRPC::Service.new('127.0.0.1', port).call(cache: [:validation, 'v1']).lib.validated(1)
    { 'token' => first.cache[:validation], 'valid' => again.valid?, 'value' => again.value,
      'stale' => [stale.valid?, stale.value[0], stale.cache[:validation]], 'gem' => gem }
  when 'callback'
    got = svc.cast(callback: ["127.0.0.1:#{arg}", :cron, :updated_stats, [42]]).lib.add(86_000, 193)
    { 'got' => got }
  when 'not_allowed'
    svc.cast(callback: ['192.0.2.1:4815', :m, :f, []]).lib.add(1, 1)
  when 'bad_options'
    [{ accept: [:everything] }, { validation: 7 }, { callback: ['127.0.0.1:1', :m, :f, []] }].map do |o|
      svc.call(**o).lib.add(1, 1)
    rescue BERTD::InvalidOption => e
      e.message
    end + [begin
      svc.cast(callback: ['nowhere', :m, :f, []]).lib.add(1, 1)
    rescue BERTD::InvalidOption => e
      e.message
    end]
  when 'max_stream'
    endless = Enumerator.new { |y| loop { y << ('s' * MIB) } }
    svc.call(stream_in: endless).lib.sum_stream
  when 'stop_reading'
    answer = svc.call(accept: [:stream]).lib.stream_out(64, MIB)
    first = answer.each.next
    answer.close
    { 'first' => first.bytesize, 'rest' => answer.read.bytesize, 'then' => svc.call.lib.add(5, 5) }
  when 'bertrpc_hash_options'
    BERTRPC::Service.new('127.0.0.1', port).call({ accept: [:stream] }).lib.stream_out(2, 3).read
  # Against a scripted server (tests/clients/fake_server.py): what bertd would never send.
  when 'fake_cache'
    svc.call(accept: [:cache]).m.f
  when 'fake_stream'
    svc.max_chunk = Integer(arg) if arg
    answer = svc.call(accept: [:stream]).m.f
    chunks = []
    begin
      answer.each { |c| chunks << c }
    rescue BERTD::Error => e
      { 'chunks' => chunks, 'raised' => e.class.name, 'message' => e.message }
    end
  when 'fake_plain'
    svc.call.m.f
  else
    raise ArgumentError, "unknown scenario #{scenario}"
  end
rescue StandardError => e
  { 'raised' => e.class.name, 'message' => e.message }
end
puts JSON.generate(out)
