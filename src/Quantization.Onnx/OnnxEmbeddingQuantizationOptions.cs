namespace Quantization.Onnx;

/// <summary>
/// How the quantizers store embedding tables (set <see cref="OnnxWeightQuantizationOptions.Embeddings"/>; on by
/// default): the float data of a Gather on axis 0 whose table is a constant of rank 2 with at least
/// <see cref="MinElements"/> elements becomes symmetric int8 with one scale per row (<see cref="Scheme"/>), read through
/// ONNX Runtime's <c>com.microsoft.GatherBlockQuantized</c> (<see cref="Operator"/>). Each gathered row is then exactly
/// the library's dequantized row, <c>(q − zero point) · scale</c> in float.
/// </summary>
/// <remarks>
/// A table that other nodes read too (a tied output projection, say through a Transpose) is stored once, quantized per
/// row, and a DequantizeLinear feeds every reader (before opset 21, with a per-group or 4-bit scheme, such a table stays in float); a table
/// that a MatMul or Gemm quantizer took first (a Gemm with transB reads the table directly) is already stored once as
/// int8, and the Gather reads that. Node-name patterns (<see cref="OnnxWeightQuantizationOptions.IncludeNodes"/>,
/// <see cref="OnnxWeightQuantizationOptions.ExcludeNodes"/>) choose Gather nodes as they choose the others;
/// <see cref="OnnxWeightQuantizationOptions.OpTypes"/> does not apply.
/// </remarks>
public sealed class OnnxEmbeddingQuantizationOptions
{
    private QuantizationScheme _scheme = QuantizationScheme.Int8PerChannel();
    private long _minElements = 1_000_000;
    private OnnxEmbeddingOperator _operator = OnnxEmbeddingOperator.GatherBlockQuantized;

    /// <summary>
    /// Gets or sets the smallest table, in elements, that is quantized: 1,000,000 by default, so that vocabularies are
    /// (all-MiniLM-L6-v2's 30522 × 384 words, 47 MB of its 90 MB) and small tables (positions, token types) stay in float.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long MinElements
    {
        get => _minElements;
        set => _minElements = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The smallest table to quantize has zero or more elements.");
    }

    /// <summary>
    /// Gets or sets the tables' scheme: symmetric int8 per row by default (per channel means per row, whatever axis the
    /// scheme names). Per group means blocks of <see cref="QuantizationGranularity.GroupSize"/> consecutive elements of a
    /// row (a power of two, at least 16, as ONNX Runtime's operator requires; the last group of a row may be partial).
    /// Int8, UInt8, Int4 or UInt4 (<see cref="QuantizationScheme.Int4PerGroup"/>), symmetric or asymmetric; not per tensor
    /// or per token.
    /// </summary>
    /// <exception cref="ArgumentNullException">The value is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The scheme is not one ONNX Runtime's GatherBlockQuantized runs.</exception>
    public QuantizationScheme Scheme
    {
        get => _scheme;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            _scheme = EmbeddingWriter.Supports(value, out string? reason) ? value : throw new ArgumentException(reason, nameof(value));
        }
    }

    /// <summary>
    /// Gets or sets the operator that reads the quantized table: <see cref="OnnxEmbeddingOperator.GatherBlockQuantized"/> by
    /// default. DequantizeLinear takes per-group and 4-bit schemes from opset 21 (blocked, int4 DequantizeLinear).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined operator.</exception>
    public OnnxEmbeddingOperator Operator
    {
        get => _operator;
        set => _operator = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "Unknown embedding operator.");
    }
}
