# codec_diff.rb: the Ruby half of test_ruby.py's differential test of BERTD::Codec against Erlang
# (ruby_diff.escript). Usage: ruby -I lib codec_diff.rb ERL_TERMS RUBY_CASES.
# It decodes and re-encodes each Erlang-made term in both float forms, prints a JSON report on
# stdout, and writes Ruby-made values with the Erlang expression they stand for to RUBY_CASES for
# the escript to judge. It never writes anywhere else.
require 'json'
require 'bertd/codec'

C = BERTD::Codec
LOCAL = :'nonode@nohost'

# The Erlang term of the IEEE bits of f, computed without any BERT codec.
def float_expr(f)
  "begin <<F:64/float>> = <<#{[f].pack('G').bytes.join(',')}>>, F end"
end

def ruby_cases
  bits = BERTD::BitBinary
  fixed = [
    [BERTD::Pid.new(LOCAL, 1, 2, 0), 'list_to_pid("<0.1.2>")'],
    [BERTD::Port.new(LOCAL, 7, 0), 'list_to_port("#Port<0.7>")'],
    [BERTD::Ref.new(LOCAL, 0, [1, 2, 3]), 'list_to_ref("#Ref<0.3.2.1>")'],
    [BERTD::Export.new(:lists, :map, 2), 'fun lists:map/2'],
    [BERTD::Export.new(:erlang, :+, 2), "fun erlang:'+'/2"],
    [bits.new("\xa0".b, 3), '<<5:3>>'],
    [bits.new("\x01\x02\xff".b, 7), '<<1, 2, 127:7>>'],
    [bits.new("\x01".b, 8), '<<1>>'],
    [BERT::Tuple[:ok, [bits.new("\x80".b, 1), BERTD::Export.new(:m, :f, 0)], 2.5],
     '{ok, [<<1:1>>, fun m:f/0], 2.5}'],
    [[0.1 + 0.2, -0.0, 5e-324, 1e300], '[0.30000000000000004, -0.0, 5.0e-324, 1.0e300]']
  ]
  rng = Random.new(11)
  floats = Array.new(300) { [rng.bytes(8)].pack('a8').unpack1('G') }.select(&:finite?)
  fixed + floats.map { |f| [f, float_expr(f)] }
end

def write_ruby_cases(path)
  File.open(path, 'wb') do |out|
    ruby_cases.each do |value, text|
      { ernie: 0, new: 1 }.each do |format, code|
        bert = C.encode(value, float_format: format)
        out.write([code, bert.bytesize].pack('CN') + bert + [text.bytesize].pack('N') + text.b)
      end
    end
  end
end

KINDS = [BERTD::Fun, BERTD::Export, BERTD::Pid, BERTD::Port, BERTD::Ref, BERTD::BitBinary, Float].freeze

# Counts the kinds of value (among KINDS) inside v.
def count_kinds(value, counts)
  kind = KINDS.find { |k| value.is_a?(k) }
  counts[kind.name] += 1 if kind
  value.each { |x| count_kinds(x, counts) } if value.is_a?(Array)
  value.free.each { |x| count_kinds(x, counts) } if value.is_a?(BERTD::Fun)
end

def fun_inside?(value)
  value.is_a?(BERTD::Fun) || (value.is_a?(Array) && value.any? { |x| fun_inside?(x) })
end

# One Erlang record: nil when both forms re-encode to Erlang's bytes, else what went wrong.
def judge(plain, ernie, counts)
  value = C.decode(plain)
  count_kinds(value, counts)
  again = C.encode(value, float_format: :new)
  return "plain re-encodes as #{again.bytes}" if again != plain

  old = C.decode(ernie)
  again = C.encode(old, float_format: :ernie)
  return "minor_version 0 re-encodes as #{again.bytes}" if again != ernie
  # FLOAT_EXT text holds every bit of the double (a fun keeps the form it was read in).
  return 'FLOAT_EXT decoded to another value' if !fun_inside?(value) && old != value

  nil
rescue StandardError => e
  "#{e.class}: #{e.message}"
end

erl_path, ruby_path = ARGV
data = File.binread(erl_path)
pos = 0
failures = []
counts = Hash.new(0)
records = 0
while pos < data.bytesize
  fields = Array.new(2) do
    size = data.byteslice(pos, 4).unpack1('N')
    field = data.byteslice(pos + 4, size)
    pos += 4 + size
    field
  end
  why = judge(*fields, counts)
  failures << { index: records, bytes: fields[0].bytes.first(40), why: why } if why
  records += 1
end
write_ruby_cases(ruby_path)
puts JSON.generate(records: records, failures: failures, kinds: counts)
