# matrix_values.rb: what the Ruby matrix handler and client share: the value table (each value
# decoded on its own, so one ruby-bert cannot read costs only that value) and an equality that sees
# every change (1 vs 1.0, -0.0 vs 0.0, Tuple vs Array, Hash order). Never lenient.
require 'bertd/codec'

module MatrixValues
  module_function

  # [values, errors]: {name => value} and {name => why it could not be decoded}; names are Strings.
  def load(path)
    values = {}
    errors = {}
    BERTD::Codec.decode(File.binread(path)).each do |name, encoded|
      values[name] = BERTD::Codec.decode(encoded)
    rescue StandardError => e
      errors[name] = "#{e.class}: #{e.message}"
    end
    [values, errors]
  end

  def same?(a, b)
    return false unless a.class == b.class

    case a
    when Float then [a].pack('G') == [b].pack('G')
    when Array then a.size == b.size && a.zip(b).all? { |x, y| same?(x, y) }
    when Hash
      a.size == b.size && a.to_a.zip(b.to_a).all? { |(k1, v1), (k2, v2)| same?(k1, k2) && same?(v1, v2) }
    when String then a.b == b.b
    when Time then a.to_i == b.to_i && a.usec == b.usec
    when Regexp then a.source == b.source && a.options == b.options
    else a == b
    end
  end

  def short(value, limit = 200)
    text = value.inspect
    text.size <= limit ? text : "#{text[0, limit]}..."
  end
end
