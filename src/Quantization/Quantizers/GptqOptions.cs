namespace Quantization;

/// <summary>Settings of <see cref="GptqQuantizer"/>. Each setter validates its value.</summary>
public sealed class GptqOptions
{
    private double _dampeningFraction = 0.01;
    private int _blockSize = 128;
    private int? _inputAxis;

    /// <summary>
    /// Gets or sets the dampening: this fraction of the mean of the Hessian's diagonal is added to its diagonal before it is
    /// inverted (0.01 by default, as in the paper). Larger values are more robust and compensate less.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not finite and positive.</exception>
    public double DampeningFraction
    {
        get => _dampeningFraction;
        set
        {
            if (!double.IsFinite(value) || value <= 0)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The dampening fraction must be finite and positive.");
            }

            _dampeningFraction = value;
        }
    }

    /// <summary>
    /// Gets or sets how many input columns are quantized between two updates of the remaining columns (lazy batch updates;
    /// 128 by default). It changes the speed, not the algorithm: results differ only by floating-point summation order.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public int BlockSize
    {
        get => _blockSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _blockSize = value;
        }
    }

    /// <summary>
    /// Gets or sets whether input columns are quantized in decreasing order of the Hessian's diagonal (the inputs with the most
    /// energy first, "act-order"), rather than in index order; <see langword="false"/> by default. The result is stored in the
    /// original order either way, and its parameters (per group too) are RTN's, computed from the original weight in the
    /// original column order ("static groups"), so no column index tensor (<c>g_idx</c>) is needed to read it.
    /// </summary>
    public bool ActivationOrder { get; set; }

    /// <summary>
    /// Gets or sets the search that chooses each group's (or channel's) range from the original weight, or
    /// <see langword="null"/> (the default) for its min and max as rounding to nearest takes them. GPTQ then rounds with
    /// the searched parameters, as the reference quantizer does with <c>mse=True</c>.
    /// </summary>
    public WeightRangeSearch? RangeSearch { get; set; }

    /// <summary>
    /// Gets or sets the axis of the 2-D weight that holds the input features (K), or <see langword="null"/> (the default) to
    /// infer it: the axis that is not the channel axis of a per-channel scheme, the group axis of a per-group scheme (groups
    /// are always consecutive input columns), and axis 1 (the [out, in] layout of a torch Linear weight) for a per-tensor
    /// scheme. Set 0 for a per-tensor ONNX MatMul B of shape [K, N]. Negative values count from the last axis.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not -2, -1, 0, 1 or <see langword="null"/>.</exception>
    public int? InputAxis
    {
        get => _inputAxis;
        set
        {
            if (value is < -2 or > 1)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "A 2-D weight's input axis is 0 or 1 (or -2 or -1).");
            }

            _inputAxis = value;
        }
    }
}
