using System.Buffers;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

/// <summary>
/// A linear layer, <c>y = x W^T + b</c>, with a symmetric int8 weight [outFeatures, inFeatures] (one scale per output
/// channel) or a 4-bit weight (Int4 or UInt4, one scale and zero point per output channel and group of input features),
/// and an optional float bias: the compute kernels of inference, for one token (GEMV) or many (GEMM).
/// </summary>
/// <remarks>
/// <para>
/// <see cref="QuantizedLinearMode.W8A8"/> quantizes each token's activations to int8 inside the call and sums int8 x int8
/// products exactly in int32 (the same sums on every SIMD tier, including for -128 and 127); the output is
/// <c>fma((float)sum, s_x[t] * s_w[n], b[n])</c>. <see cref="QuantizedLinearMode.W8A16"/> keeps float activations and
/// converts the weight to float inside the dot product; the output is <c>fma(dot(x, q_w), s_w[n], b[n])</c>, with the
/// same bits on every tier too (see the kernel's summation order below).
/// </para>
/// <para>
/// The weight is repacked once, at construction, into panels of 32 output channels; inside a panel, for each group of
/// four input features, the 32 channels' four weights lie side by side (<c>[panel][k / 4][channel % 32][k % 4]</c>).
/// One pass over a panel is one sequential stream, and a 256-bit vector of it is 8 channels x 4 features, the shape the
/// AVX-VNNI instruction <c>vpdpbusd</c> sums into eight int32 lanes. In W8A16 each (channel, feature mod 4) has its own
/// float accumulator, updated with one fused multiply-add per step; the four are added as <c>(a0 + a1) + (a2 + a3)</c>.
/// </para>
/// <para>
/// Forward is blocked for cache: one panel (32 x inFeatures bytes) is read once per block of up to 48 tokens while it
/// stays in cache, and tokens are quantized once per call. With <see cref="MaxDegreeOfParallelism"/> above 1 each thread
/// takes a contiguous range of panels, and takes over the rest of another's range when it finishes first; every output is
/// computed the same way, so the results are the same bits. An instance is immutable apart from that setting, and
/// <see cref="Forward"/> may be called from several threads at once.
/// </para>
/// <para>
/// W8A8 runs the fastest kernel the machine has: 512-bit <c>vpdpbusd</c> (AVX512_VNNI), then the 256-bit AVX-VNNI form,
/// then AVX-512BW / AVX2 <c>vpmaddwd</c>, portable vectors and scalar code, all giving the same sums. .NET 10 has no
/// intrinsic for the 512-bit form, so on Linux x64 the library assembles that kernel at run time into executable
/// memory (see <see cref="DisableAssembledKernelsSwitch"/> for when it does, and <see cref="KernelPath"/> for the path a
/// layer runs). With up to four tokens it reads two panels at once, as two streams from memory.
/// </para>
/// <para>
/// A 4-bit weight runs <see cref="QuantizedLinearMode.W4A16"/> (float activations; each weight dequantized inside the dot
/// product to exactly <c>(q - zeroPoint) * scale</c>, the bits of <see cref="QuantizedTensor.Dequantize()"/>; every channel
/// sums its even and its odd input features in two fused multiply-add chains, in order, and the output is
/// <c>(a0 + a1) + b[n]</c>) or <see cref="QuantizedLinearMode.W4A8"/> (each token quantized to int8 as in W8A8; per group
/// g the exact int32 sum of <c>(q - zeroPoint) x q_x</c>, then <c>total = fma((float)sum_g, s_w[n, g], total)</c> in
/// group order and <c>y = fma(total, s_x[t], b[n])</c>). Both give the same bits on every SIMD tier. The weight is
/// repacked at construction into panels of 32 channels whose 32-bit words hold eight consecutive codes of a channel, so
/// that a vector load is 16 (or 8) channels and one shift brings any feature's codes to the low bits.
/// </para>
/// </remarks>
public sealed class QuantizedLinear
{
    /// <summary>
    /// The name of the <see cref="AppContext"/> switch that decides whether the library assembles its AVX-512 VNNI kernel
    /// into executable memory. Unset, the kernel is on where the runtime itself generates code
    /// (<see cref="System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported"/>) and off where it does not, as
    /// under NativeAOT. <see langword="true"/> turns it off, for processes whose policy forbids run-time code;
    /// <see langword="false"/> turns it on, NativeAOT included. Set it before the first layer is created, with
    /// <c>AppContext.SetSwitch(QuantizedLinear.DisableAssembledKernelsSwitch, true)</c>, in the project file with
    /// <c>&lt;RuntimeHostConfigurationOption Include="Quantization.DisableAssembledKernels" Value="true" /&gt;</c>, or in
    /// <c>runtimeconfig.json</c>'s <c>configProperties</c>. Layers created while the kernel is off use the intrinsic paths
    /// (AVX-VNNI or narrower), with the same results, more slowly where AVX-512 VNNI would have run;
    /// <see cref="KernelPath"/> tells which path a layer runs.
    /// </summary>
    public const string DisableAssembledKernelsSwitch = "Quantization.DisableAssembledKernels";

    /// <summary>Tokens computed per pass over a panel (the kernels' sums for them fit on the stack).</summary>
    private const int TokenBlock = 48;

    /// <summary>
    /// The weight bytes of a unit of parallel work: long enough for the memory streams of a GEMV to reach full speed
    /// and for claiming a unit to cost nothing in comparison, short enough that a late thread waits for little.
    /// </summary>
    private const int UnitBytes = 128 * 1024;

    private static readonly QuantizationScheme ActivationScheme = QuantizationScheme.Int8PerTensor();

    private readonly PackedInt8Weight? _weight;
    private readonly PackedInt4Weight? _int4;
    private readonly bool _int4Symmetric;
    private readonly float[] _scales = [];
    private readonly float[] _bias;
    private int _maxDegreeOfParallelism = 1;

    /// <summary>Initializes a new instance of the <see cref="QuantizedLinear"/> class from a quantized weight.</summary>
    /// <param name="weight">
    /// The weight, shape [outFeatures, inFeatures]: symmetric int8 (zero points 0), per channel along axis 0 or per tensor
    /// (<see cref="QuantizationScheme.Int8PerChannel"/> with axis 0 is the usual scheme); or Int4 / UInt4, symmetric or
    /// asymmetric, per group along the input features (axis 1 or -1, a group size that is a multiple of 8, the last group
    /// may be partial), per output channel (axis 0) or per tensor (<see cref="QuantizationScheme.Int4PerGroup"/> is the
    /// usual scheme). Its data is repacked (copied).
    /// </param>
    /// <param name="bias">The bias, <c>outFeatures</c> values, or empty for none.</param>
    /// <exception cref="ArgumentNullException"><paramref name="weight"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The weight is not a non-empty 2-D int8 or 4-bit tensor with a granularity listed above (int8: symmetric, zero points 0), or the bias has the wrong length.</exception>
    /// <exception cref="NonFiniteValueException">The bias contains NaN or an infinity.</exception>
    public QuantizedLinear(QuantizedTensor weight, ReadOnlySpan<float> bias = default)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ReadOnlySpan<int> shape = weight.Shape;
        QuantizationScheme scheme = weight.Scheme;
        if (shape.Length != 2 || shape[0] == 0 || shape[1] == 0)
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(weight.Name)} must be a non-empty [outFeatures, inFeatures] matrix, not [{string.Join(", ", weight.Shape.ToArray())}]."), nameof(weight));
        }

        OutFeatures = shape[0];
        InFeatures = shape[1];
        WeightType = scheme.Type;
        bool perChannel = scheme.Granularity.Kind == GranularityKind.PerChannel && scheme.Granularity.Axis is 0 or -2;
        if (scheme.Type is QuantizedType.Int4 or QuantizedType.UInt4)
        {
            _int4 = PackInt4(weight, perChannel, out _int4Symmetric);
        }
        else
        {
            (_weight, _scales) = PackInt8(weight, perChannel);
        }

        if (!bias.IsEmpty && bias.Length != OutFeatures)
        {
            throw new ArgumentException(FormattableString.Invariant($"The bias has {bias.Length} values but the layer has {OutFeatures} output features."), nameof(bias));
        }

        QuantizationPrimitives.ThrowIfNonFinite(bias, "bias", nameof(bias));
        _bias = new float[Panels * PackedInt8Weight.PanelRows];
        bias.CopyTo(_bias);
        HasBias = !bias.IsEmpty;
    }

    /// <summary>Gets the number of input features (K).</summary>
    public int InFeatures { get; }

    /// <summary>Gets the number of output features (N).</summary>
    public int OutFeatures { get; }

    /// <summary>Gets a value indicating whether the layer adds a bias.</summary>
    public bool HasBias { get; }

    /// <summary>
    /// Gets the type of the weight: <see cref="QuantizedType.Int8"/> runs <see cref="QuantizedLinearMode.W8A8"/> and
    /// <see cref="QuantizedLinearMode.W8A16"/>, <see cref="QuantizedType.Int4"/> and <see cref="QuantizedType.UInt4"/> run
    /// <see cref="QuantizedLinearMode.W4A16"/> and <see cref="QuantizedLinearMode.W4A8"/>.
    /// </summary>
    public QuantizedType WeightType { get; }

    /// <summary>Gets or sets the most threads one <see cref="Forward"/> call uses; 1 (the default) runs on the calling thread.</summary>
    /// <remarks>
    /// Above 1, the calling thread works with helper threads that the library starts once per process (at most one less
    /// than the processors; they are background threads). After a call a helper keeps polling for the next one for 0.2 ms,
    /// so that the many short calls of a decode step start at once, and then blocks. The helpers serve one call at a time:
    /// a call made while another holds them runs on its own thread, with the same results.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The value is below 1.</exception>
    public int MaxDegreeOfParallelism
    {
        get => _maxDegreeOfParallelism;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxDegreeOfParallelism = value;
        }
    }

    /// <summary>
    /// Gets the integer kernel this layer's <see cref="QuantizedLinearMode.W8A8"/> (int8 weight) or
    /// <see cref="QuantizedLinearMode.W4A8"/> (4-bit weight) forward runs: the fastest this machine and process support,
    /// chosen when the layer is created. Every path gives the same results; this tells which one is measured or profiled.
    /// </summary>
    public Int8KernelPath KernelPath => _weight is null ? Int4Path : Int8Path;

    /// <summary>Gets or sets the W8A8 kernel path; the fastest supported one unless a test chooses another.</summary>
    internal Int8KernelPath Int8Path { get; set; } = Int8KernelPaths.Best;

    /// <summary>Gets or sets the W4A8 kernel path; the fastest supported one unless a test chooses another.</summary>
    internal Int8KernelPath Int4Path { get; set; } = Int4Int8Kernel.Best;

    /// <summary>Gets or sets the W8A16 and W4A16 kernel tier; the active SIMD tier unless a test chooses another.</summary>
    internal SimdTier FloatTier { get; set; } = QuantizationPrimitives.ActiveSimdTier;

    private int Panels => _weight?.Panels ?? _int4!.Panels;

    private int PaddedInFeatures => _weight?.PaddedInFeatures ?? _int4!.PaddedInFeatures;

    /// <summary>Checks and repacks a symmetric int8 weight; returns it with one scale per (padded) output channel.</summary>
    private static (PackedInt8Weight Weight, float[] Scales) PackInt8(QuantizedTensor weight, bool perChannel)
    {
        QuantizationScheme scheme = weight.Scheme;
        if (scheme.Type != QuantizedType.Int8 || !scheme.Symmetric || !(perChannel || scheme.Granularity.Kind == GranularityKind.PerTensor))
        {
            throw new ArgumentException($"{TensorNames.Describe(weight.Name)} must be symmetric int8 per tensor or per output channel (axis 0), or 4-bit, not {scheme.Type} {(scheme.Symmetric ? "symmetric" : "asymmetric")} {scheme.Granularity}.", nameof(weight));
        }

        if (weight.Parameters.ZeroPoints.ContainsAnyExcept(0))
        {
            throw new ArgumentException($"{TensorNames.Describe(weight.Name)} must have zero points of 0 (symmetric quantization).", nameof(weight));
        }

        int outFeatures = weight.Shape[0], inFeatures = weight.Shape[1];
        PackedInt8Weight packed = new(weight.GetInt8Data(), outFeatures, inFeatures);
        float[] channelScales = new float[packed.Panels * PackedInt8Weight.PanelRows];
        ReadOnlySpan<float> scales = weight.Parameters.Scales;
        for (int n = 0; n < outFeatures; n++)
        {
            channelScales[n] = perChannel ? scales[n] : scales[0];
        }

        return (packed, channelScales);
    }

    /// <summary>
    /// Checks and repacks a 4-bit weight: codes <c>q + 8</c> (Int4) or <c>q</c> (UInt4) with offsets <c>zeroPoint + 8</c> or
    /// <c>zeroPoint</c>, so that every weight is <c>(code - offset) * scale</c>.
    /// </summary>
    private static PackedInt4Weight PackInt4(QuantizedTensor weight, bool perChannel, out bool symmetric)
    {
        QuantizationGranularity granularity = weight.Scheme.Granularity;
        int outFeatures = weight.Shape[0], inFeatures = weight.Shape[1];
        bool perGroup = granularity.Kind == GranularityKind.PerGroup && granularity.Axis is 1 or -1;
        if (!(perGroup || perChannel || granularity.Kind == GranularityKind.PerTensor))
        {
            throw new ArgumentException($"{TensorNames.Describe(weight.Name)} must be quantized per group along the input features (axis 1), per output channel (axis 0) or per tensor, not {granularity}.", nameof(weight));
        }

        if (perGroup && granularity.GroupSize % PackedInt4Weight.StepFeatures != 0 && granularity.GroupSize < inFeatures)
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(weight.Name)} has groups of {granularity.GroupSize} input features; the 4-bit kernels need a multiple of {PackedInt4Weight.StepFeatures} (16 to 256, powers of two, are the usual sizes)."), nameof(weight));
        }

        int groupSize = perGroup ? Math.Min(granularity.GroupSize, inFeatures) : inFeatures;
        int groups = (inFeatures + groupSize - 1) / groupSize;
        bool signed = weight.Scheme.Type == QuantizedType.Int4;
        byte[] codes = new byte[outFeatures * inFeatures];
        if (signed)
        {
            ReadOnlySpan<sbyte> values = weight.GetInt4Data();
            for (int i = 0; i < codes.Length; i++)
            {
                codes[i] = (byte)(values[i] + 8);
            }
        }
        else
        {
            weight.GetUInt4Data().CopyTo(codes);
        }

        float[] scales = new float[outFeatures * groups];
        int[] offsets = new int[outFeatures * groups];
        ReadOnlySpan<float> s = weight.Parameters.Scales;
        ReadOnlySpan<int> z = weight.Parameters.ZeroPoints;
        for (int n = 0; n < outFeatures; n++)
        {
            for (int g = 0; g < groups; g++)
            {
                int index = perGroup ? (n * groups) + g : perChannel ? n : 0;
                scales[(n * groups) + g] = s[index];
                offsets[(n * groups) + g] = z[index] + (signed ? 8 : 0);
            }
        }

        symmetric = !offsets.AsSpan().ContainsAnyExcept(8);
        return new PackedInt4Weight(codes, outFeatures, inFeatures, groupSize, scales, offsets);
    }

    /// <summary>
    /// Creates a layer from a float weight: quantizes it per output channel, symmetric int8 over [-127, 127]
    /// (<see cref="QuantizationScheme.Int8PerChannel"/>, ONNX Runtime's arithmetic).
    /// </summary>
    /// <param name="weight">The weight, row-major [outFeatures, inFeatures] (PyTorch's <c>nn.Linear</c> layout).</param>
    /// <param name="outFeatures">The number of output features; positive.</param>
    /// <param name="inFeatures">The number of input features; positive.</param>
    /// <param name="bias">The bias, <paramref name="outFeatures"/> values, or empty for none.</param>
    /// <param name="name">A name for the weight, used in exception messages.</param>
    /// <returns>The layer.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A feature count is not positive.</exception>
    /// <exception cref="ArgumentException">The weight does not have <c>outFeatures x inFeatures</c> values, or the bias has the wrong length.</exception>
    /// <exception cref="NonFiniteValueException">The weight or the bias contains NaN or an infinity.</exception>
    public static QuantizedLinear Create(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias = default, string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        if ((long)outFeatures * inFeatures != weight.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"The weight has {weight.Length} values but [{outFeatures}, {inFeatures}] needs {(long)outFeatures * inFeatures}."), nameof(weight));
        }

        return new QuantizedLinear(QuantizedTensor.Quantize(weight, [outFeatures, inFeatures], QuantizationScheme.Int8PerChannel(), name), bias);
    }

    /// <summary>Computes <c>output = input W^T + b</c> for <paramref name="tokens"/> rows of input.</summary>
    /// <param name="input">The activations, row-major [tokens, <see cref="InFeatures"/>].</param>
    /// <param name="output">Receives the outputs, row-major [tokens, <see cref="OutFeatures"/>].</param>
    /// <param name="tokens">The number of tokens (rows); 1 is a GEMV.</param>
    /// <param name="mode">
    /// Whether the activations are quantized (<see cref="QuantizedLinearMode.W8A8"/>, <see cref="QuantizedLinearMode.W4A8"/>)
    /// or stay float (<see cref="QuantizedLinearMode.W8A16"/>, <see cref="QuantizedLinearMode.W4A16"/>); its weight width
    /// must be the layer's (<see cref="WeightType"/>).
    /// </param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is negative or <paramref name="mode"/> is not defined.</exception>
    /// <exception cref="ArgumentException">A span does not have <paramref name="tokens"/> rows of the layer's width, or <paramref name="mode"/> is for the other weight width.</exception>
    /// <exception cref="NonFiniteValueException">The input contains NaN or an infinity (the output is then not written).</exception>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, QuantizedLinearMode mode)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (!Enum.IsDefined(mode))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown linear mode.");
        }

        bool fourBitMode = mode is QuantizedLinearMode.W4A16 or QuantizedLinearMode.W4A8;
        if (fourBitMode != (_int4 is not null))
        {
            string modes = _int4 is null ? "W8A8 or W8A16" : "W4A16 or W4A8";
            throw new ArgumentException($"Mode {mode} needs a {(fourBitMode ? "4-bit" : "int8")} weight, but this layer's weight is {WeightType}: use {modes}.", nameof(mode));
        }

        if ((long)tokens * InFeatures != input.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"The input has {input.Length} values but {tokens} tokens of {InFeatures} features need {(long)tokens * InFeatures}."), nameof(input));
        }

        if ((long)tokens * OutFeatures != output.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"The output has {output.Length} values but {tokens} tokens of {OutFeatures} features need {(long)tokens * OutFeatures}."), nameof(output));
        }

        if (tokens == 0)
        {
            return;
        }

        int padded = PaddedInFeatures;
        float[] tokenScales = ArrayPool<float>.Shared.Rent(tokens);
        sbyte[]? quantized = null;
        byte[]? activations = null;
        float[]? floats = null;
        int[]? groupSums = null;
        try
        {
            if (mode is QuantizedLinearMode.W8A8 or QuantizedLinearMode.W4A8)
            {
                quantized = ArrayPool<sbyte>.Shared.Rent(tokens * padded);
                QuantizeActivations(input, tokens, quantized.AsSpan(0, tokens * padded), tokenScales);
                if (mode == QuantizedLinearMode.W8A8)
                {
                    Int8KernelPath path = Int8Path;
                    int length = tokens * padded * Int8PanelKernel.ActivationBytes(path);
                    activations = ArrayPool<byte>.Shared.Rent(length);
                    Int8PanelKernel.PrepareActivations(path, quantized.AsSpan(0, tokens * padded), activations.AsSpan(0, length));
                }
                else
                {
                    groupSums = ArrayPool<int>.Shared.Rent(tokens * _int4!.Groups);
                    Int4Int8Kernel.SumGroups(_int4, quantized.AsSpan(0, tokens * padded), tokens, groupSums);
                }
            }
            else
            {
                floats = ArrayPool<float>.Shared.Rent(tokens * padded);
                for (int t = 0; t < tokens; t++)
                {
                    ReadOnlySpan<float> source = input.Slice(t * InFeatures, InFeatures);
                    if (QuantizationPrimitives.MinMaxCore(source, out _, out _))
                    {
                        QuantizationPrimitives.ThrowIfNonFinite(source, nameof(input), nameof(input), (long)t * InFeatures);
                    }

                    Span<float> row = floats.AsSpan(t * padded, padded);
                    source.CopyTo(row);
                    row[InFeatures..].Clear();
                }
            }

            PanelWork work = new(this, mode, activations, quantized, groupSums, floats, tokenScales, tokens);
            Run(work, output);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(tokenScales);
            if (quantized is not null)
            {
                ArrayPool<sbyte>.Shared.Return(quantized);
            }

            if (activations is not null)
            {
                ArrayPool<byte>.Shared.Return(activations);
            }

            if (groupSums is not null)
            {
                ArrayPool<int>.Shared.Return(groupSums);
            }

            if (floats is not null)
            {
                ArrayPool<float>.Shared.Return(floats);
            }
        }
    }

    /// <summary>
    /// Quantizes each token (symmetric int8, one scale per token) into rows padded with zeros; the pass that finds a row's
    /// range also finds NaN and infinities (<see cref="NonFiniteValueException"/> naming the input and the index).
    /// </summary>
    private void QuantizeActivations(ReadOnlySpan<float> input, int tokens, Span<sbyte> quantized, float[] tokenScales)
    {
        int padded = PaddedInFeatures;
        for (int t = 0; t < tokens; t++)
        {
            Span<sbyte> row = quantized.Slice(t * padded, padded);
            tokenScales[t] = QuantizationPrimitives.QuantizeRunDynamic(input.Slice(t * InFeatures, InFeatures), ActivationScheme, MemoryMarshal.AsBytes(row[..InFeatures]), "input", "input", (long)t * InFeatures).Scale;
            row[InFeatures..].Clear();
        }
    }

    /// <summary>
    /// Runs every panel, on this thread or with the helper threads of <see cref="PanelTeam"/>: each thread takes a
    /// contiguous range of units of about <see cref="UnitBytes"/> of weight, at least two panels where the kernel reads
    /// panels in pairs, and at least four units a thread when the layer has enough panels.
    /// </summary>
    private unsafe void Run(PanelWork work, Span<float> output)
    {
        int panels = Panels;
        int degree = Math.Min(_maxDegreeOfParallelism, panels);
        if (degree > 1)
        {
            int panelBytes = PackedInt8Weight.PanelRows * (_weight is null ? PaddedInFeatures / 2 : PaddedInFeatures);
            int unitPanels = Math.Clamp(Math.Min((UnitBytes + panelBytes - 1) / panelBytes, panels / (4 * degree)), 2, panels);
            fixed (float* pinned = output)
            {
                if (PanelTeam.TryRun(work, pinned, output.Length, panels, unitPanels, degree))
                {
                    return;
                }
            }
        }

        // One thread, or another call holds the helpers.
        work.Run(0, panels, output);
    }

    /// <summary>One Forward call's prepared inputs; computes the outputs of a range of panels.</summary>
    internal readonly struct PanelWork(QuantizedLinear layer, QuantizedLinearMode mode, byte[]? activations, sbyte[]? quantized, int[]? groupSums, float[]? floats, float[] tokenScales, int tokens)
    {
        public void Run(int firstPanel, int endPanel, Span<float> output)
        {
            switch (mode)
            {
                case QuantizedLinearMode.W8A8:
                    RunInt8(firstPanel, endPanel, output);
                    break;
                case QuantizedLinearMode.W8A16:
                    RunWeightOnly(firstPanel, endPanel, output);
                    break;
                case QuantizedLinearMode.W4A16:
                    RunInt4WeightOnly(firstPanel, endPanel, output);
                    break;
                default:
                    RunInt4Int8(firstPanel, endPanel, output);
                    break;
            }
        }

        private void RunInt4WeightOnly(int firstPanel, int endPanel, Span<float> output)
        {
            PackedInt4Weight weight = layer._int4!;
            int padded = weight.PaddedInFeatures;
            SimdTier tier = layer.FloatTier;
            int perPass = Int4WeightOnlyKernel.MaxTokens(tier);
            Span<float> sums = stackalloc float[Math.Max(perPass, 2) * PackedInt4Weight.PanelRows];
            if (tier == SimdTier.Vector512 && tokens < perPass)
            {
                // Decoding: the weight streams from memory, faster as two streams, so panel p goes with p + half.
                int half = (endPanel - firstPanel + 1) / 2;
                for (int p = firstPanel; p < firstPanel + half; p++)
                {
                    int other = p + half < endPanel ? p + half : p;
                    for (int t = 0; t < tokens; t++)
                    {
                        Int4WeightOnlyKernel.AccumulatePair(weight, p, other, layer._int4Symmetric, floats.AsSpan(t * padded, padded), sums);
                        WriteInt4Sums(p, t, sums, output);
                        WriteInt4Sums(other, t, sums[PackedInt4Weight.PanelRows..], output);
                    }
                }

                return;
            }

            for (int p = firstPanel; p < endPanel; p++)
            {
                for (int t0 = 0; t0 < tokens; t0 += perPass)
                {
                    int block = Math.Min(perPass, tokens - t0);
                    Int4WeightOnlyKernel.Accumulate(tier, weight, p, layer._int4Symmetric, floats.AsSpan(t0 * padded, block * padded), block, sums);
                    for (int t = 0; t < block; t++)
                    {
                        WriteInt4Sums(p, t0 + t, sums.Slice(t * PackedInt4Weight.PanelRows), output);
                    }
                }
            }
        }

        /// <summary>Writes <c>y = sum + b</c> for one panel and token.</summary>
        private void WriteInt4Sums(int panel, int token, ReadOnlySpan<float> sums, Span<float> output)
        {
            int outFeatures = layer.OutFeatures;
            int first = panel * PackedInt4Weight.PanelRows;
            int channels = Math.Min(PackedInt4Weight.PanelRows, outFeatures - first);
            ReadOnlySpan<float> bias = layer._bias.AsSpan(first, channels);
            Span<float> y = output.Slice((token * outFeatures) + first, channels);
            for (int c = 0; c < channels; c++)
            {
                y[c] = sums[c] + bias[c];
            }
        }

        private void RunInt4Int8(int firstPanel, int endPanel, Span<float> output)
        {
            PackedInt4Weight weight = layer._int4!;
            int padded = weight.PaddedInFeatures;
            int outFeatures = layer.OutFeatures;
            Int8KernelPath path = layer.Int4Path;
            Span<float> totals = stackalloc float[TokenBlock * PackedInt4Weight.PanelRows];
            for (int p = firstPanel; p < endPanel; p++)
            {
                int first = p * PackedInt4Weight.PanelRows;
                int channels = Math.Min(PackedInt4Weight.PanelRows, outFeatures - first);
                ReadOnlySpan<float> bias = layer._bias.AsSpan(first, channels);
                for (int t0 = 0; t0 < tokens; t0 += TokenBlock)
                {
                    int block = Math.Min(TokenBlock, tokens - t0);
                    Int4Int8Kernel.Accumulate(path, weight, p, quantized.AsSpan(t0 * padded, block * padded), groupSums.AsSpan(t0 * weight.Groups, block * weight.Groups), block, totals);
                    for (int t = 0; t < block; t++)
                    {
                        Span<float> y = output.Slice(((t0 + t) * outFeatures) + first, channels);
                        ReadOnlySpan<float> total = totals.Slice(t * PackedInt4Weight.PanelRows, channels);
                        float tokenScale = tokenScales[t0 + t];
                        for (int c = 0; c < channels; c++)
                        {
                            y[c] = MathF.FusedMultiplyAdd(total[c], tokenScale, bias[c]);
                        }
                    }
                }
            }
        }

        private void RunInt8(int firstPanel, int endPanel, Span<float> output)
        {
            PackedInt8Weight weight = layer._weight!;
            Int8KernelPath path = layer.Int8Path;
            int stride = weight.PaddedInFeatures * Int8PanelKernel.ActivationBytes(path);
            Span<int> sums = stackalloc int[TokenBlock * PackedInt8Weight.PanelRows];
            if (Int8PanelKernel.PairsPanels(path, tokens))
            {
                // Few tokens: the weight streams from memory, faster as two streams, so panel p goes with p + half.
                int half = (endPanel - firstPanel + 1) / 2;
                int rows = tokens * PackedInt8Weight.PanelRows;
                for (int p = firstPanel; p < firstPanel + half; p++)
                {
                    int other = p + half;
                    if (other < endPanel)
                    {
                        Int8PanelKernel.AccumulatePair(weight, p, other, activations, tokens, sums);
                        WritePanel(other, 0, tokens, sums[rows..], output);
                    }
                    else
                    {
                        Int8PanelKernel.Accumulate(path, weight, p, activations, tokens, sums);
                    }

                    WritePanel(p, 0, tokens, sums, output);
                }

                return;
            }

            for (int p = firstPanel; p < endPanel; p++)
            {
                for (int t0 = 0; t0 < tokens; t0 += TokenBlock)
                {
                    int block = Math.Min(TokenBlock, tokens - t0);
                    Int8PanelKernel.Accumulate(path, weight, p, activations.AsSpan(t0 * stride, block * stride), block, sums);
                    WritePanel(p, t0, block, sums, output);
                }
            }
        }

        /// <summary>Dequantizes one panel's sums for tokens [t0, t0 + block) into the output.</summary>
        private void WritePanel(int panel, int t0, int block, ReadOnlySpan<int> sums, Span<float> output)
        {
            int outFeatures = layer.OutFeatures;
            int first = panel * PackedInt8Weight.PanelRows;
            int channels = Math.Min(PackedInt8Weight.PanelRows, outFeatures - first);
            ReadOnlySpan<float> scales = layer._scales.AsSpan(first, channels);
            ReadOnlySpan<float> bias = layer._bias.AsSpan(first, channels);
            for (int t = 0; t < block; t++)
            {
                Dequantize(sums.Slice(t * PackedInt8Weight.PanelRows, channels), tokenScales[t0 + t], scales, bias, output.Slice(((t0 + t) * outFeatures) + first, channels));
            }
        }

        /// <summary>
        /// <c>y[c] = fma((float)sum[c], tokenScale * scale[c], bias[c])</c>; a whole panel's 32 channels in 256-bit
        /// vectors (the same operations lane by lane, so the same bits), a partial panel one channel at a time.
        /// </summary>
        private static void Dequantize(ReadOnlySpan<int> sums, float tokenScale, ReadOnlySpan<float> scales, ReadOnlySpan<float> bias, Span<float> y)
        {
            int c = 0;
            if (Vector256.IsHardwareAccelerated && y.Length == PackedInt8Weight.PanelRows)
            {
                Vector256<float> factor = Vector256.Create(tokenScale);
                for (; c < PackedInt8Weight.PanelRows; c += Vector256<float>.Count)
                {
                    Vector256<float> sum = Vector256.ConvertToSingle(Vector256.Create(sums.Slice(c, Vector256<int>.Count)));
                    Vector256<float> scale = factor * Vector256.Create(scales.Slice(c, Vector256<float>.Count));
                    Vector256.FusedMultiplyAdd(sum, scale, Vector256.Create(bias.Slice(c, Vector256<float>.Count))).CopyTo(y.Slice(c, Vector256<float>.Count));
                }
            }

            for (; c < y.Length; c++)
            {
                y[c] = MathF.FusedMultiplyAdd(sums[c], tokenScale * scales[c], bias[c]);
            }
        }

        private void RunWeightOnly(int firstPanel, int endPanel, Span<float> output)
        {
            PackedInt8Weight weight = layer._weight!;
            int padded = weight.PaddedInFeatures;
            int outFeatures = layer.OutFeatures;
            SimdTier tier = layer.FloatTier;
            int perPass = WeightOnlyPanelKernel.MaxTokens(tier);
            Span<float> lanes = stackalloc float[perPass * WeightOnlyPanelKernel.Lanes];
            for (int p = firstPanel; p < endPanel; p++)
            {
                int first = p * PackedInt8Weight.PanelRows;
                int channels = Math.Min(PackedInt8Weight.PanelRows, outFeatures - first);
                ReadOnlySpan<float> scales = layer._scales.AsSpan(first, channels);
                ReadOnlySpan<float> bias = layer._bias.AsSpan(first, channels);
                for (int t0 = 0; t0 < tokens; t0 += perPass)
                {
                    int block = Math.Min(perPass, tokens - t0);
                    WeightOnlyPanelKernel.Accumulate(tier, weight, p, floats.AsSpan(t0 * padded, block * padded), block, lanes);
                    for (int t = 0; t < block; t++)
                    {
                        Span<float> y = output.Slice(((t0 + t) * outFeatures) + first, channels);
                        for (int c = 0; c < channels; c++)
                        {
                            ReadOnlySpan<float> l = lanes.Slice(((t * PackedInt8Weight.PanelRows) + c) * PackedInt8Weight.StepFeatures, PackedInt8Weight.StepFeatures);
                            y[c] = MathF.FusedMultiplyAdd((l[0] + l[1]) + (l[2] + l[3]), scales[c], bias[c]);
                        }
                    }
                }
            }
        }
    }
}
