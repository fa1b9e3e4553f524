using Quantization;

namespace Quantization.Samples;

/// <summary>The token embedding table: float rows, or int8 rows with one scale each (dequantized on lookup).</summary>
public sealed class TokenEmbedding
{
    private readonly float[]? _float;
    private readonly QuantizedTensor? _int8;
    private readonly int _width;

    /// <summary>Initializes a new instance of the <see cref="TokenEmbedding"/> class.</summary>
    /// <param name="table">[vocabulary, hidden] row-major.</param>
    /// <param name="hidden">The row width.</param>
    /// <param name="quantize">Whether to store int8 rows (symmetric, one scale per row).</param>
    public TokenEmbedding(float[] table, int hidden, bool quantize)
    {
        _width = hidden;
        if (quantize)
        {
            _int8 = QuantizedTensor.Quantize(table, [table.Length / hidden, hidden], QuantizationScheme.Int8PerChannel(), "model.embed_tokens.weight");
        }
        else
        {
            _float = table;
        }
    }

    /// <summary>Gets the bytes held.</summary>
    public long Bytes => _int8?.SizeInBytes ?? ((long)_float!.Length * sizeof(float));

    /// <summary>Writes a token's row.</summary>
    /// <param name="token">The token id.</param>
    /// <param name="destination">Receives hidden values.</param>
    public void Lookup(int token, Span<float> destination)
    {
        if (_float is not null)
        {
            _float.AsSpan(token * _width, _width).CopyTo(destination);
            return;
        }

        ReadOnlySpan<sbyte> row = _int8!.GetInt8Data().Slice(token * _width, _width);
        float scale = _int8.Parameters.Scales[token];
        for (int i = 0; i < row.Length; i++)
        {
            destination[i] = row[i] * scale;
        }
    }
}
