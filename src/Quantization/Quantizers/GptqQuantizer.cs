using System.Diagnostics;
using System.Numerics;
using System.Numerics.Tensors;

using static System.FormattableString;

namespace Quantization;

/// <summary>
/// GPTQ weight quantization (Frantar, Ashkboos, Hoefler and Alistarh, 2022, "GPTQ: Accurate Post-Training Quantization for
/// Generative Pre-trained Transformers"): quantizes a linear layer's weight one input column at a time and spreads each
/// column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs, so
/// that the layer's output error <c>‖X (W − Ŵ)‖²</c> on the calibration inputs X is much smaller than round-to-nearest's.
/// </summary>
/// <remarks>
/// <para>
/// Parameters are "static groups": every scale and zero point — per tensor, per output channel, or per group of
/// consecutive input columns of each output channel — is computed once, up front, from the original weight in its
/// original column order, exactly as <see cref="QuantizedTensor.Quantize(ReadOnlySpan{float}, ReadOnlySpan{int}, QuantizationScheme, string?)"/>
/// (RTN) computes them, so the result is stored and dequantized exactly like RTN's (no column permutation or group index
/// tensor, <c>g_idx</c>, is needed by any consumer); only the integers differ. The reference implementation instead computes
/// each group's parameters when its first column is reached, from the weights as the error feedback has updated them; with
/// act-order (<see cref="GptqOptions.ActivationOrder"/>) a group's columns are then no longer consecutive in processing
/// order, which is why that form needs <c>g_idx</c>, and formats such as ONNX MatMulNBits have no place for one. Static
/// groups work in any processing order, and act-order (columns taken in decreasing diag(H)) keeps the groups of the original
/// column order.
/// </para>
/// <para>
/// Each value is quantized with the scheme's convention (its division or reciprocal, its rounding), clamped to the scheme's
/// [<see cref="QuantizationScheme.QuantMin"/>, <see cref="QuantizationScheme.QuantMax"/>]: for weights the error feedback
/// has not changed (an uncorrelated input, or the first column) the integer is RTN's, bit for bit.
/// </para>
/// <para>
/// The algorithm: inputs that were never active (H_ii = 0) get H_ii = 1 and a zero weight (their parameters still count the
/// original weight, as RTN's do); then λ = dampening × mean(diag H) is added to the diagonal; the upper Cholesky factor U
/// of H⁻¹ (H⁻¹ = UᵀU) is computed in double; columns are taken in blocks, each column j is quantized and its error
/// (w − ŵ) / U_jj subtracted, times U_j,k, from every later column k — at once inside the block, in one batched update for
/// the columns after it. The working copy of the weight is double. If the dampened Hessian is still not positive definite in
/// floating point, the dampening is multiplied by 10, up to three times. A Hessian that saw no calibration rows carries no
/// information: the result is then RTN's.
/// </para>
/// </remarks>
public static class GptqQuantizer
{
    private const int DampeningRetries = 3;

    /// <summary>The rows the factorisation and the triangular inverse take at a time.</summary>
    private const int Rows = 4;

    /// <summary>The multiply-adds of a batched update from which it is spread over cores.</summary>
    private const long ParallelUpdateWork = 1 << 20;

    /// <summary>Quantizes a 2-D linear weight with GPTQ.</summary>
    /// <param name="weight">The weight, row-major: [N, K] (a torch Linear's [out, in]) or [K, N] (an ONNX MatMul's B).</param>
    /// <param name="shape">The weight's shape; two dimensions.</param>
    /// <param name="scheme">
    /// An 8-bit or 4-bit scheme, per tensor, per channel along the output axis N, or per group along the input axis K
    /// (<see cref="QuantizationGranularity.PerGroup(int, int)"/> with the input axis: -1 for [N, K], 0 for [K, N]; any
    /// group size, the last group partial when it does not divide K).
    /// </param>
    /// <param name="hessian">The Hessian of the layer's inputs; its <see cref="HessianAccumulator.Features"/> must be K. When it saw no rows, the result is RTN's.</param>
    /// <param name="options">The settings; the defaults (dampening 0.01, blocks of 128, index order) when <see langword="null"/>.</param>
    /// <param name="name">The weight's name, used in messages and carried by the result.</param>
    /// <param name="cancellationToken">Checked before the factorisation and between blocks of columns.</param>
    /// <returns>The quantized weight, with RTN's parameters (or those of <see cref="GptqOptions.RangeSearch"/>).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> or <paramref name="hessian"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The shape is not 2-D or does not fit the data, the granularity is per token, the channel axis is the input axis, the group axis is not, or K is not the Hessian's feature count.</exception>
    /// <exception cref="NonFiniteValueException">The weight contains NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The Hessian is not positive definite even with 1000 times the dampening.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
    public static QuantizedTensor Quantize(ReadOnlySpan<float> weight, ReadOnlySpan<int> shape, QuantizationScheme scheme, HessianAccumulator hessian, GptqOptions? options = null, string? name = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(hessian);
        return Quantize(weight, shape, scheme, hessian.Rows == 0 ? null : hessian.ToMatrix(), hessian.Features, options, name, cancellationToken);
    }

    /// <summary>The core, on a K×K row-major Hessian that it takes over (it is modified); <see langword="null"/> for one that saw no rows (RTN).</summary>
    internal static QuantizedTensor Quantize(ReadOnlySpan<float> weight, ReadOnlySpan<int> shape, QuantizationScheme scheme, double[]? hessian, int features, GptqOptions? options, string? name, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        options ??= new GptqOptions();
        int inputAxis = ResolveInputAxis(shape, scheme, options, name);
        int k = shape[inputAxis];
        int n = shape[1 - inputAxis];
        if (features != k)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(name)} has shape [{shape[0]}, {shape[1]}] with {k} input features on axis {inputAxis}, but the Hessian has {features}."), nameof(hessian));
        }

        Debug.Assert(hessian is null || hessian.Length == (long)k * k, "The Hessian is K×K.");

        // RTN (or the range search) validates the data (length, NaN, group size) and gives the parameters; the factors are
        // what its kernel applied.
        (QuantizedTensor rtn, float[]? factors) = options.RangeSearch is WeightRangeSearch search ? search.QuantizeWithFactors(weight, shape, scheme, name) : (QuantizedTensor.Quantize(weight, shape, scheme, name), null);
        if (k == 0 || n == 0 || hessian is null)
        {
            return rtn;
        }

        QuantizationParameters parameters = rtn.Parameters;
        factors ??= ComputeFactors(weight, shape, scheme, parameters, name);
        cancellationToken.ThrowIfCancellationRequested();

        // The working copy, one row per input column: row k holds W[:, k] over the N outputs.
        double[] columns = new double[(long)k * n];
        for (int row = 0; row < shape[0]; row++)
        {
            for (int col = 0; col < shape[1]; col++)
            {
                (int input, int output) = inputAxis == 1 ? (col, row) : (row, col);
                columns[((long)input * n) + output] = weight[(row * shape[1]) + col];
            }
        }

        for (int i = 0; i < k; i++)
        {
            if (hessian[((long)i * k) + i] == 0)
            {
                hessian[((long)i * k) + i] = 1;
                columns.AsSpan(i * n, n).Clear();
            }
        }

        int[] order = ProcessingOrder(hessian, k, options.ActivationOrder);
        double[] orderedColumns = columns;
        if (options.ActivationOrder)
        {
            hessian = Permute(hessian, k, order);
            orderedColumns = new double[columns.Length];
            for (int j = 0; j < k; j++)
            {
                columns.AsSpan(order[j] * n, n).CopyTo(orderedColumns.AsSpan(j * n, n));
            }
        }

        double[] upper = InverseUpperFactor(hessian, k, options.DampeningFraction, name);
        ParameterMap map = ParameterMap.Create(scheme.Granularity, inputAxis, k, n, order);

        int[] quantized = new int[k * n];
        QuantizeColumns(orderedColumns, upper, k, n, scheme, parameters, factors, map, options.BlockSize, quantized, cancellationToken);

        byte[] codes = new byte[k * n];
        for (int j = 0; j < k; j++)
        {
            int input = order[j];
            for (int output = 0; output < n; output++)
            {
                int index = inputAxis == 1 ? (output * k) + input : (input * n) + output;
                codes[index] = unchecked((byte)quantized[(j * n) + output]);
            }
        }

        return QuantizedTensor.FromCodes(codes, shape.ToArray(), scheme, parameters, name);
    }

    /// <summary>
    /// Computes the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) into a K×K row-major array, or returns <see langword="false"/>
    /// when <paramref name="hessian"/> is not positive definite in floating point. <paramref name="hessian"/>, a full
    /// symmetric matrix, is the workspace: it is overwritten.
    /// </summary>
    /// <remarks>
    /// With J the reversal permutation, the lower Cholesky factor L of JHJ gives H = (JLJ)(JLJ)ᵀ with JLJ upper triangular,
    /// so H⁻¹ = UᵀU for U = (JLJ)⁻¹ = J L⁻¹ J, which is upper triangular with a positive diagonal: the factor sought. This
    /// takes one factorisation and one triangular inverse instead of the reference's factorisation, inverse and second
    /// factorisation, and no memory beyond the two K×K arrays: each reversal reads one strict triangle and writes the other.
    /// </remarks>
    internal static bool TryInverseUpperFactor(Span<double> hessian, int k, Span<double> upper)
    {
        Debug.Assert(hessian.Length >= k * k && upper.Length >= k * k, "Both arrays are K×K.");
        if (!TryReversedCholesky(hessian, k))
        {
            return false;
        }

        InvertReversedFactor(hessian, k, upper);
        return true;
    }

    /// <summary>
    /// Overwrites the lower triangle of a full symmetric K×K matrix H with the lower Cholesky factor L of JHJ (J the
    /// reversal), or returns <see langword="false"/> when H is not positive definite in floating point.
    /// </summary>
    /// <remarks>
    /// Row by row, L_ij = (A_ij − L_i,:j · L_j,:j) / L_jj, four rows at a time: each earlier row j is read once for the
    /// four dot products, so the O(K³) pass streams a quarter of the memory.
    /// </remarks>
    internal static bool TryReversedCholesky(Span<double> matrix, int k)
    {
        // JHJ's lower triangle in place: its strict part from H's strict upper one, the diagonal reversed.
        Span<double> lower = matrix[..(k * k)];
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j < i; j++)
            {
                lower[(i * k) + j] = lower[((k - 1 - i) * k) + (k - 1 - j)];
            }
        }

        ReverseDiagonal(lower, k);
        for (int i0 = 0; i0 < k; i0 += Rows)
        {
            int last = Math.Min(i0 + Rows, k);
            if (last - i0 == Rows)
            {
                Span<double> r0 = lower.Slice(i0 * k, k), r1 = lower.Slice((i0 + 1) * k, k);
                Span<double> r2 = lower.Slice((i0 + 2) * k, k), r3 = lower.Slice((i0 + 3) * k, k);
                for (int j = 0; j < i0; j++)
                {
                    (double d0, double d1, double d2, double d3) = Dot4(lower.Slice(j * k, j), r0, r1, r2, r3);
                    double diagonal = lower[(j * k) + j];
                    r0[j] = (r0[j] - d0) / diagonal;
                    r1[j] = (r1[j] - d1) / diagonal;
                    r2[j] = (r2[j] - d2) / diagonal;
                    r3[j] = (r3[j] - d3) / diagonal;
                }
            }

            for (int i = i0; i < last; i++)
            {
                Span<double> rowI = lower.Slice(i * k, k);
                for (int j = last - i0 == Rows ? i0 : 0; j <= i; j++)
                {
                    double s = rowI[j] - TensorPrimitives.Dot(rowI[..j], lower.Slice(j * k, j));
                    if (i == j)
                    {
                        if (!(s > 0) || !double.IsFinite(s))
                        {
                            return false;
                        }

                        rowI[i] = Math.Sqrt(s);
                    }
                    else
                    {
                        rowI[j] = s / lower[(j * k) + j];
                    }
                }
            }
        }

        return true;
    }

    /// <summary>
    /// From L in the lower triangle of <paramref name="lower"/> (<see cref="TryReversedCholesky"/>), writes U = J L⁻¹ J, upper
    /// triangular, into <paramref name="upper"/>.
    /// </summary>
    /// <remarks>
    /// M = L⁻¹ is built in the lower triangle of <paramref name="upper"/>, row by row (M_i,:i = −(Σ_t&lt;i L_it M_t,:) / L_ii,
    /// M_ii = 1 / L_ii), four rows at a time so that each earlier row t is read once for all four; then reversed in place.
    /// </remarks>
    internal static void InvertReversedFactor(ReadOnlySpan<double> lower, int k, Span<double> upper)
    {
        Span<double> inverse = upper[..(k * k)];
        for (int i0 = 0; i0 < k; i0 += Rows)
        {
            int last = Math.Min(i0 + Rows, k);
            for (int i = i0; i < last; i++)
            {
                inverse.Slice(i * k, i + 1).Clear();
            }

            int shared = 0;
            if (last - i0 == Rows)
            {
                shared = i0;
                Span<double> m0 = inverse.Slice(i0 * k, k), m1 = inverse.Slice((i0 + 1) * k, k);
                Span<double> m2 = inverse.Slice((i0 + 2) * k, k), m3 = inverse.Slice((i0 + 3) * k, k);
                for (int t = 0; t < i0; t++)
                {
                    MultiplyAdd4(inverse.Slice(t * k, t + 1), lower[(i0 * k) + t], lower[((i0 + 1) * k) + t], lower[((i0 + 2) * k) + t], lower[((i0 + 3) * k) + t], m0, m1, m2, m3);
                }
            }

            for (int i = i0; i < last; i++)
            {
                Span<double> rowM = inverse.Slice(i * k, i + 1);
                for (int t = shared; t < i; t++)
                {
                    double l = lower[(i * k) + t];
                    if (l != 0)
                    {
                        Span<double> head = rowM[..(t + 1)];
                        TensorPrimitives.MultiplyAdd(inverse.Slice(t * k, t + 1), l, head, head);
                    }
                }

                double diagonal = lower[(i * k) + i];
                TensorPrimitives.Multiply(rowM[..i], -1 / diagonal, rowM[..i]);
                rowM[i] = 1 / diagonal;
            }
        }

        // U = J M J: the strict upper triangle from M's strict lower one, the diagonal reversed, then the lower cleared.
        for (int i = 0; i < k; i++)
        {
            for (int j = i + 1; j < k; j++)
            {
                inverse[(i * k) + j] = inverse[((k - 1 - i) * k) + (k - 1 - j)];
            }
        }

        ReverseDiagonal(inverse, k);
        for (int i = 1; i < k; i++)
        {
            inverse.Slice(i * k, i).Clear();
        }
    }

    /// <summary>The dot products of <paramref name="x"/> with the first x.Length values of four rows.</summary>
    private static (double D0, double D1, double D2, double D3) Dot4(ReadOnlySpan<double> x, ReadOnlySpan<double> a0, ReadOnlySpan<double> a1, ReadOnlySpan<double> a2, ReadOnlySpan<double> a3)
    {
        int n = x.Length;
        int width = Vector<double>.Count;
        Vector<double> s0 = default, s1 = default, s2 = default, s3 = default;
        int i = 0;
        for (; i <= n - width; i += width)
        {
            Vector<double> v = new(x[i..]);
            s0 = Vector.FusedMultiplyAdd(new Vector<double>(a0[i..]), v, s0);
            s1 = Vector.FusedMultiplyAdd(new Vector<double>(a1[i..]), v, s1);
            s2 = Vector.FusedMultiplyAdd(new Vector<double>(a2[i..]), v, s2);
            s3 = Vector.FusedMultiplyAdd(new Vector<double>(a3[i..]), v, s3);
        }

        double d0 = Vector.Sum(s0), d1 = Vector.Sum(s1), d2 = Vector.Sum(s2), d3 = Vector.Sum(s3);
        for (; i < n; i++)
        {
            d0 += a0[i] * x[i];
            d1 += a1[i] * x[i];
            d2 += a2[i] * x[i];
            d3 += a3[i] * x[i];
        }

        return (d0, d1, d2, d3);
    }

    /// <summary><c>m_r[..x.Length] += l_r × x</c> for four rows, reading <paramref name="x"/> once.</summary>
    private static void MultiplyAdd4(ReadOnlySpan<double> x, double l0, double l1, double l2, double l3, Span<double> m0, Span<double> m1, Span<double> m2, Span<double> m3)
    {
        int n = x.Length;
        int width = Vector<double>.Count;
        int i = 0;
        for (; i <= n - width; i += width)
        {
            Vector<double> v = new(x[i..]);
            Vector.FusedMultiplyAdd(v, new Vector<double>(l0), new Vector<double>(m0[i..])).CopyTo(m0[i..]);
            Vector.FusedMultiplyAdd(v, new Vector<double>(l1), new Vector<double>(m1[i..])).CopyTo(m1[i..]);
            Vector.FusedMultiplyAdd(v, new Vector<double>(l2), new Vector<double>(m2[i..])).CopyTo(m2[i..]);
            Vector.FusedMultiplyAdd(v, new Vector<double>(l3), new Vector<double>(m3[i..])).CopyTo(m3[i..]);
        }

        for (; i < n; i++)
        {
            m0[i] += l0 * x[i];
            m1[i] += l1 * x[i];
            m2[i] += l2 * x[i];
            m3[i] += l3 * x[i];
        }
    }

    /// <summary>Validates the shape and granularity against a 2-D linear weight and returns its input axis (K).</summary>
    private static int ResolveInputAxis(ReadOnlySpan<int> shape, QuantizationScheme scheme, GptqOptions options, string? name)
    {
        if (shape.Length != 2)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(name)} has shape [{string.Join(", ", shape.ToArray())}]; GPTQ quantizes 2-D linear weights."), nameof(shape));
        }

        QuantizationGranularity granularity = scheme.Granularity;
        if (granularity.Kind == GranularityKind.PerToken)
        {
            throw new ArgumentException($"{TensorNames.Describe(name)}: GPTQ supports per-tensor, per-channel and per-group schemes, not {granularity}.", nameof(scheme));
        }

        if (granularity.Kind != GranularityKind.PerTensor && granularity.Axis is < -2 or > 1)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(name)}: axis {granularity.Axis} of {granularity} is outside a 2-D weight."), nameof(scheme));
        }

        int axis = granularity.Axis < 0 ? granularity.Axis + 2 : granularity.Axis;
        int? inferred = granularity.Kind switch
        {
            GranularityKind.PerChannel => 1 - axis,
            GranularityKind.PerGroup => axis,
            _ => null,
        };
        int input = options.InputAxis is int a ? (a < 0 ? a + 2 : a) : inferred ?? 1;
        if (granularity.Kind == GranularityKind.PerChannel && input == axis)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(name)}: the input axis {input} cannot be the scheme's channel axis."), nameof(options));
        }

        if (granularity.Kind == GranularityKind.PerGroup && input != axis)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(name)}: GPTQ groups consecutive input columns, so the group axis must be the input axis {input}, not {axis}."), nameof(options));
        }

        return input;
    }

    /// <summary>The quantize factors RTN's kernel applied for these parameters (for GgmlQ8_0, 1/d before d was rounded to fp16).</summary>
    private static float[] ComputeFactors(ReadOnlySpan<float> weight, ReadOnlySpan<int> shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name)
    {
        TensorLayout layout = TensorLayout.Create(shape, scheme.Granularity, nameof(shape));
        int count = layout.ParameterCount;
        float[] mins = new float[count], maxs = new float[count], scales = new float[count], factors = new float[count];
        int[] zeroPoints = new int[count];
        QuantizationPrimitives.ObserveRanges(weight, layout, mins, maxs, NonFinitePolicy.Throw, name, nameof(weight));
        QuantizationPrimitives.FillFromRanges(scheme, mins, maxs, scales, zeroPoints, factors, nameof(weight));
        Debug.Assert(scales.AsSpan().SequenceEqual(parameters.Scales) && zeroPoints.AsSpan().SequenceEqual(parameters.ZeroPoints), "The observed parameters are RTN's.");
        return factors;
    }

    private static void ReverseDiagonal(Span<double> matrix, int k)
    {
        for (int i = 0, j = k - 1; i < j; i++, j--)
        {
            (matrix[(i * k) + i], matrix[(j * k) + j]) = (matrix[(j * k) + j], matrix[(i * k) + i]);
        }
    }

    /// <summary>The input columns in the order they are quantized: index order, or decreasing diag(H) (ties in index order).</summary>
    private static int[] ProcessingOrder(double[] hessian, int k, bool activationOrder)
    {
        int[] order = Enumerable.Range(0, k).ToArray();
        if (activationOrder)
        {
            double[] diagonal = new double[k];
            for (int i = 0; i < k; i++)
            {
                diagonal[i] = hessian[((long)i * k) + i];
            }

            order = [.. order.OrderByDescending(i => diagonal[i])];
        }

        return order;
    }

    private static double[] Permute(double[] hessian, int k, int[] order)
    {
        double[] permuted = new double[(long)k * k];
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j < k; j++)
            {
                permuted[((long)i * k) + j] = hessian[((long)order[i] * k) + order[j]];
            }
        }

        return permuted;
    }

    /// <summary>Dampens the (permuted) Hessian and factors its inverse, raising the dampening tenfold while it is not positive definite.</summary>
    private static double[] InverseUpperFactor(double[] hessian, int k, double dampeningFraction, string? name)
    {
        double meanDiagonal = 0;
        for (int i = 0; i < k; i++)
        {
            meanDiagonal += hessian[((long)i * k) + i];
        }

        meanDiagonal /= k;
        double[] dampened = new double[hessian.Length];
        double[] upper = new double[hessian.Length];
        double fraction = dampeningFraction;
        for (int attempt = 0; attempt <= DampeningRetries; attempt++, fraction *= 10)
        {
            hessian.CopyTo(dampened, 0);
            double lambda = fraction * meanDiagonal;
            for (int i = 0; i < k; i++)
            {
                dampened[((long)i * k) + i] += lambda;
            }

            if (TryInverseUpperFactor(dampened, k, upper))
            {
                return upper;
            }
        }

        throw new InvalidOperationException(Invariant($"{TensorNames.Describe(name)}: the Hessian is not positive definite even with dampening {fraction / 10} × mean(diag H); the calibration inputs may be degenerate or non-finite."));
    }

    /// <summary>The GPTQ loop over columns (rows of <paramref name="columns"/>) in blocks, with lazy batch updates.</summary>
    private static void QuantizeColumns(double[] columns, double[] upper, int k, int n, QuantizationScheme scheme, QuantizationParameters parameters, float[] factors, ParameterMap map, int blockSize, int[] quantized, CancellationToken cancellationToken)
    {
        ReadOnlySpan<float> scales = parameters.Scales;
        ReadOnlySpan<int> zeroPoints = parameters.ZeroPoints;
        NumericConvention convention = scheme.Convention;
        float lo = scheme.QuantMin, hi = scheme.QuantMax;
        int block = Math.Min(blockSize, k);
        double[] errors = new double[block * n];
        for (int start = 0; start < k; start += block)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int end = Math.Min(start + block, k);
            for (int j = start; j < end; j++)
            {
                Span<double> w = columns.AsSpan(j * n, n);
                Span<double> error = errors.AsSpan((j - start) * n, n);
                Span<int> q = quantized.AsSpan(j * n, n);
                double d = upper[((long)j * k) + j];
                int parameter = map.First[j];
                for (int o = 0; o < n; o++)
                {
                    int p = parameter + (o * map.Stride);
                    q[o] = QuantizeValue(convention, (float)w[o], factors[p], zeroPoints[p], lo, hi);
                    float dequantized = (q[o] - zeroPoints[p]) * scales[p];
                    error[o] = (w[o] - dequantized) / d;
                }

                for (int later = j + 1; later < end; later++)
                {
                    Subtract(columns.AsSpan(later * n, n), error, upper[((long)j * k) + later]);
                }
            }

            // The batched update: each later column takes the block's errors in the same order, so splitting the later
            // columns over cores gives the same bits.
            int first = start, last = end;
            void UpdateLater(int later)
            {
                Span<double> target = columns.AsSpan(later * n, n);
                for (int j = first; j < last; j++)
                {
                    Subtract(target, errors.AsSpan((j - first) * n, n), upper[((long)j * k) + later]);
                }
            }

            if ((long)(k - end) * (end - start) * n >= ParallelUpdateWork)
            {
                Parallel.For(end, k, UpdateLater);
            }
            else
            {
                for (int later = end; later < k; later++)
                {
                    UpdateLater(later);
                }
            }
        }
    }

    /// <summary><c>target −= coefficient × error</c>.</summary>
    private static void Subtract(Span<double> target, ReadOnlySpan<double> error, double coefficient)
    {
        if (coefficient != 0)
        {
            TensorPrimitives.MultiplyAdd(error, -coefficient, target, target);
        }
    }

    /// <summary>One value through the kernels' scalar step, with the convention's scaling and rounding.</summary>
    private static int QuantizeValue(NumericConvention convention, float x, float factor, int zeroPoint, float lo, float hi)
    {
        if (!convention.MultipliesByReciprocal)
        {
            return QuantizeOperator.Quantize<DivideScaling, RoundToEven>(x, factor, zeroPoint, lo, hi);
        }

        return convention.Rounding == MidpointRounding.AwayFromZero
            ? QuantizeOperator.Quantize<MultiplyScaling, RoundAwayFromZero>(x, factor, zeroPoint, lo, hi)
            : QuantizeOperator.Quantize<MultiplyScaling, RoundToEven>(x, factor, zeroPoint, lo, hi);
    }

    /// <summary>
    /// Where a value's parameters are: for the column at processing position j and output o, parameter
    /// <c>First[j] + o × Stride</c> in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.
    /// </summary>
    private readonly record struct ParameterMap(int[] First, int Stride)
    {
        public static ParameterMap Create(QuantizationGranularity granularity, int inputAxis, int k, int n, int[] order)
        {
            int[] first = new int[k];
            if (granularity.Kind != GranularityKind.PerGroup)
            {
                // Per tensor: parameter 0; per channel: parameter o.
                return new ParameterMap(first, granularity.Kind == GranularityKind.PerChannel ? 1 : 0);
            }

            // Groups of g input columns: [N, ceil(K / g)] for an [N, K] weight, [ceil(K / g), N] for a [K, N] one.
            int g = granularity.GroupSize;
            int groups = (k + g - 1) / g;
            for (int j = 0; j < k; j++)
            {
                int group = order[j] / g;
                first[j] = inputAxis == 1 ? group : group * n;
            }

            return new ParameterMap(first, inputAxis == 1 ? groups : 1);
        }
    }
}
