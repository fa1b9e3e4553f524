namespace Quantization;

/// <summary>
/// Chooses each parameter's range by the least squared rounding error of its own weights instead of their min and max
/// (a data-free clipping search, as GPTQ's reference quantizer with <c>mse=True</c> and llm-compressor's MSE weight
/// observer do): for every ratio r of <see cref="Ratios"/>, the range [r·min, r·max] of each group (or channel) gives
/// parameters with the scheme's convention, the group is quantized and dequantized with them, and the ratio with the
/// smallest Σ(ŵ − w)² wins; values outside the chosen range saturate.
/// </summary>
/// <remarks>
/// At 4 bits a group's largest weights set a step that the many small ones round coarsely; giving up a little of the
/// extremes often lowers the error of the whole group. The search never does worse than min/max on that error, since
/// ratio 1 is min/max and ties go to the earlier ratio. It costs one quantize-dequantize pass over the weight per
/// ratio. Use it through <see cref="Quantize"/>, <see cref="GptqOptions.RangeSearch"/> or the ONNX weight quantizer's
/// option of the same name.
/// </remarks>
public sealed class WeightRangeSearch
{
    /// <summary>Gets the fractions of each group's observed range that the search tries, in order: 1, 0.99, …, 0.80 unless changed; each in (0, 1]. Ties go to the earlier ratio.</summary>
    public IList<double> Ratios { get; } = [.. Enumerable.Range(0, 21).Select(i => 1 - (i / 100.0))];

    /// <summary>Quantizes a weight with the ranges the search chooses.</summary>
    /// <param name="values">The real values, row-major.</param>
    /// <param name="shape">The shape.</param>
    /// <param name="scheme">The scheme; its convention computes each candidate's parameters.</param>
    /// <param name="name">An optional name, used in messages and reports.</param>
    /// <returns>The quantized weight.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The shape does not fit the data or the granularity, <see cref="Ratios"/> is empty, or (GgmlQ8_0) a block's range overflows the fp16 scale.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A ratio is outside (0, 1].</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity.</exception>
    public QuantizedTensor Quantize(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, string? name = null) =>
        QuantizeWithFactors(values, shape, scheme, name).Tensor;

    /// <summary><see cref="Quantize"/>, with the factors the convention quantized each parameter's values with (for GPTQ).</summary>
    internal (QuantizedTensor Tensor, float[] Factors) QuantizeWithFactors(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, string? name)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        TensorLayout layout = TensorLayout.Create(shape, scheme.Granularity, nameof(shape));
        layout.RequireElementCount(values.Length, shape, name, nameof(values));
        (QuantizationParameters parameters, float[] factors, byte[] codes) = Search(values, layout, scheme, name);
        return (QuantizedTensor.FromCodes(codes, shape.ToArray(), scheme, parameters, name), factors);
    }

    /// <summary>Checks the ratios.</summary>
    /// <exception cref="ArgumentException">There are none.</exception>
    /// <exception cref="ArgumentOutOfRangeException">One is outside (0, 1].</exception>
    internal void Validate()
    {
        if (Ratios.Count == 0)
        {
            throw new ArgumentException("WeightRangeSearch.Ratios needs at least one value.", "options");
        }

        foreach (double ratio in Ratios.Where(r => !(r is > 0 and <= 1)))
        {
            throw new ArgumentOutOfRangeException("options", ratio, "Every WeightRangeSearch.Ratios value must be in (0, 1].");
        }
    }

    /// <summary>The chosen parameters, the factors the convention quantizes with for them, and the codes (one a byte).</summary>
    private (QuantizationParameters Parameters, float[] Factors, byte[] Codes) Search(ReadOnlySpan<float> values, in TensorLayout layout, QuantizationScheme scheme, string? name)
    {
        Validate();
        int count = layout.ParameterCount;
        float[] mins = new float[count], maxs = new float[count]; // from zero, as rounding to nearest: every range holds 0
        QuantizationPrimitives.ObserveRanges(values, layout, mins, maxs, NonFinitePolicy.Throw, name, nameof(values));

        float[] scales = new float[count], factors = new float[count], lows = new float[count], highs = new float[count];
        int[] zeroPoints = new int[count];
        byte[] codes = new byte[values.Length];
        float[] restored = new float[values.Length];
        double[] errors = new double[count], bestErrors = new double[count];
        float[] bestScales = new float[count], bestFactors = new float[count];
        int[] bestZeroPoints = new int[count];
        byte[] bestCodes = new byte[values.Length];
        bool[] improved = new bool[count];
        bool first = true;
        bool signed = scheme.Type.IsSigned();
        foreach (double ratio in Ratios)
        {
            for (int p = 0; p < count; p++)
            {
                (lows[p], highs[p]) = ((float)(ratio * mins[p]), (float)(ratio * maxs[p]));
            }

            QuantizationPrimitives.FillFromRanges(scheme, lows, highs, scales, zeroPoints, factors, nameof(values));
            QuantizationPrimitives.QuantizeWithFactors(values, layout, factors, zeroPoints, codes, scheme.Convention, scheme.Type, name, nameof(values));
            QuantizationPrimitives.DequantizeWithScales(codes, layout, scales, zeroPoints, restored, signed);
            Array.Clear(errors);
            ErrorVisitor visitor = new(values, restored, errors);
            layout.Visit(ref visitor);
            bool any = false;
            for (int p = 0; p < count; p++)
            {
                // The first ratio always counts: an error can be infinite (a float overflow near float.MaxValue).
                improved[p] = first || errors[p] < bestErrors[p];
                if (improved[p])
                {
                    (bestErrors[p], bestScales[p], bestZeroPoints[p], bestFactors[p]) = (errors[p], scales[p], zeroPoints[p], factors[p]);
                    any = true;
                }
            }

            if (any)
            {
                CopyVisitor copy = new(codes, bestCodes, improved);
                layout.Visit(ref copy);
            }

            first = false;
        }

        return (QuantizationParameters.Own(bestScales, bestZeroPoints), bestFactors, bestCodes);
    }

    /// <summary>Adds each element's squared error to its parameter's sum.</summary>
    private readonly ref struct ErrorVisitor(ReadOnlySpan<float> values, ReadOnlySpan<float> restored, Span<double> errors) : IRunVisitor
    {
        private readonly ReadOnlySpan<float> _values = values;
        private readonly ReadOnlySpan<float> _restored = restored;
        private readonly Span<double> _errors = errors;

        public void Uniform(int start, int length, int parameter)
        {
            double sum = 0;
            for (int i = start; i < start + length; i++)
            {
                double e = _restored[i] - (double)_values[i];
                sum += e * e;
            }

            _errors[parameter] += sum;
        }

        public void PerLane(int start, int length, int firstParameter)
        {
            for (int j = 0; j < length; j++)
            {
                double e = _restored[start + j] - (double)_values[start + j];
                _errors[firstParameter + j] += e * e;
            }
        }
    }

    /// <summary>Copies the codes of the parameters whose error improved.</summary>
    private readonly ref struct CopyVisitor(ReadOnlySpan<byte> codes, Span<byte> bestCodes, ReadOnlySpan<bool> improved) : IRunVisitor
    {
        private readonly ReadOnlySpan<byte> _codes = codes;
        private readonly Span<byte> _bestCodes = bestCodes;
        private readonly ReadOnlySpan<bool> _improved = improved;

        public void Uniform(int start, int length, int parameter)
        {
            if (_improved[parameter])
            {
                _codes.Slice(start, length).CopyTo(_bestCodes.Slice(start, length));
            }
        }

        public void PerLane(int start, int length, int firstParameter)
        {
            for (int j = 0; j < length; j++)
            {
                if (_improved[firstParameter + j])
                {
                    _bestCodes[start + j] = _codes[start + j];
                }
            }
        }
    }
}
