using CsCheck;

using Quantization.Tests.TestUtilities;

using Xunit.Abstractions;

namespace Quantization.Tests.Quantizers;

public class GptqQuantizerTests(ITestOutputHelper output)
{
    public static TheoryData<string> Layouts => ["axis0 [N,K]", "axis1 [K,N]", "per-tensor [N,K]", "per-tensor [K,N]"];

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Quantize_OnCorrelatedInputs_CutsTheOutputErrorOfRtnByAtLeast20Percent(string layout)
    {
        const int K = 96, N = 48, Rows = 1024;
        (int[] shape, QuantizationScheme scheme, GptqOptions options, int inputAxis) = Setup(layout, K, N);
        Random random = new(42);
        float[] mixing = GptqTestData.Mixing(random, K);
        float[] calibration = GptqTestData.CorrelatedInputs(random, Rows, K, mixing);
        float[] heldOut = GptqTestData.CorrelatedInputs(random, Rows, K, mixing);
        float[] weight = GptqTestData.Gaussian(random, K * N);
        HessianAccumulator hessian = new(K);
        hessian.Add(calibration, [Rows, K], "x");

        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme, "w");
        foreach (bool activationOrder in new[] { false, true })
        {
            options.ActivationOrder = activationOrder;
            QuantizedTensor gptq = GptqQuantizer.Quantize(weight, shape, scheme, hessian, options, "w");

            Assert.Equal("w", gptq.Name);
            Assert.Equal(shape, gptq.Shape.ToArray());
            Assert.Same(scheme, gptq.Scheme);
            Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
            Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());
            Assert.All(GptqTestData.Integers(gptq), q => Assert.InRange(q, scheme.QuantMin, scheme.QuantMax));
            Assert.NotEqual(rtn.Data.ToArray(), gptq.Data.ToArray());

            double rtnCalibration = GptqTestData.OutputError(calibration, Rows, weight, rtn.Dequantize(), shape, inputAxis);
            double gptqCalibration = GptqTestData.OutputError(calibration, Rows, weight, gptq.Dequantize(), shape, inputAxis);
            double rtnHeldOut = GptqTestData.OutputError(heldOut, Rows, weight, rtn.Dequantize(), shape, inputAxis);
            double gptqHeldOut = GptqTestData.OutputError(heldOut, Rows, weight, gptq.Dequantize(), shape, inputAxis);
            output.WriteLine(FormattableString.Invariant(
                $"{layout}, act-order {activationOrder}: calibration RTN {rtnCalibration:G4}, GPTQ {gptqCalibration:G4} (ratio {gptqCalibration / rtnCalibration:F3}); held out RTN {rtnHeldOut:G4}, GPTQ {gptqHeldOut:G4} (ratio {gptqHeldOut / rtnHeldOut:F3})"));
            Assert.True(gptqCalibration <= 0.8 * rtnCalibration, $"GPTQ {gptqCalibration} vs RTN {rtnCalibration}");
            Assert.True(gptqHeldOut <= 0.8 * rtnHeldOut, $"held out: GPTQ {gptqHeldOut} vs RTN {rtnHeldOut}");
        }
    }

    /// <summary>
    /// Per group along K, at 8 and 4 bits, both layouts, index order and act-order: the parameters are RTN's per-group ones
    /// (static groups from the original weight), the result lies on RTN's grid, and the output error is well below RTN's.
    /// </summary>
    [Theory]
    [InlineData("int4", "[N,K]", 32)]
    [InlineData("int4", "[K,N]", 20)]
    [InlineData("uint4", "[N,K]", 20)]
    [InlineData("uint4", "[K,N]", 32)]
    [InlineData("int8", "[N,K]", 20)]
    [InlineData("int8", "[K,N]", 32)]
    [InlineData("uint8", "[N,K]", 24)]
    public void Quantize_PerGroup_OnCorrelatedInputs_KeepsRtnsParametersAndCutsItsOutputError(string type, string layout, int groupSize)
    {
        const int K = 96, N = 40, Rows = 1024;
        int inputAxis = layout == "[N,K]" ? 1 : 0;
        int[] shape = inputAxis == 1 ? [N, K] : [K, N];
        QuantizationGranularity granularity = QuantizationGranularity.PerGroup(groupSize, inputAxis == 1 ? -1 : 0);
        QuantizationScheme scheme = type switch
        {
            "int4" => QuantizationScheme.Int4PerGroup(groupSize).WithGranularity(granularity),
            "uint4" => QuantizationScheme.Int4PerGroup(groupSize, symmetric: false).WithGranularity(granularity),
            "int8" => new QuantizationScheme(QuantizedType.Int8, symmetric: true, granularity),
            _ => new QuantizationScheme(QuantizedType.UInt8, symmetric: false, granularity),
        };
        Random random = new(groupSize + inputAxis);
        float[] mixing = GptqTestData.Mixing(random, K);
        float[] calibration = GptqTestData.CorrelatedInputs(random, Rows, K, mixing);
        float[] heldOut = GptqTestData.CorrelatedInputs(random, Rows, K, mixing);
        float[] weight = [.. GptqTestData.Gaussian(random, K * N).Select(v => v + 0.2f)];
        HessianAccumulator hessian = new(K);
        hessian.Add(calibration, [Rows, K], "x");
        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme, "w");
        Assert.Equal(N * ((K + groupSize - 1) / groupSize), rtn.Parameters.Scales.Length);

        foreach (bool activationOrder in new[] { false, true })
        {
            QuantizedTensor gptq = GptqQuantizer.Quantize(weight, shape, scheme, hessian, new GptqOptions { ActivationOrder = activationOrder, BlockSize = 32 }, "w");
            Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
            Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());
            Assert.Equal(rtn.Data.Length, gptq.Data.Length);
            Assert.All(GptqTestData.Integers(gptq), q => Assert.InRange(q, scheme.QuantMin, scheme.QuantMax));

            // On RTN's grid: quantizing the dequantized weight with the same parameters gives the same bytes.
            float[] dequantized = gptq.Dequantize();
            Assert.Equal(gptq.Data.ToArray(), QuantizedTensor.Quantize(dequantized, shape, scheme, gptq.Parameters).Data.ToArray());

            double rtnError = GptqTestData.OutputError(calibration, Rows, weight, rtn.Dequantize(), shape, inputAxis);
            double gptqError = GptqTestData.OutputError(calibration, Rows, weight, dequantized, shape, inputAxis);
            double rtnHeldOut = GptqTestData.OutputError(heldOut, Rows, weight, rtn.Dequantize(), shape, inputAxis);
            double gptqHeldOut = GptqTestData.OutputError(heldOut, Rows, weight, dequantized, shape, inputAxis);
            output.WriteLine(FormattableString.Invariant(
                $"{type} {layout} group {groupSize}, act-order {activationOrder}: GPTQ / RTN output error {gptqError / rtnError:F3} (held out {gptqHeldOut / rtnHeldOut:F3})"));
            Assert.True(gptqError <= 0.8 * rtnError, $"GPTQ {gptqError} vs RTN {rtnError}");
            Assert.True(gptqHeldOut <= 0.8 * rtnHeldOut, $"held out: GPTQ {gptqHeldOut} vs RTN {rtnHeldOut}");
        }
    }

    /// <summary>
    /// Odd K with int4: 33 input columns in groups of 8 (the last group one column), 7 outputs, so 231 elements packed in
    /// 116 bytes with the last high nibble zero; the packed result reads back through the public constructor.
    /// </summary>
    [Theory]
    [InlineData(true, 1)]
    [InlineData(false, 0)]
    public void Quantize_Int4WithOddKAndAPartialLastGroup_PacksLikeRtn(bool symmetric, int inputAxis)
    {
        const int K = 33, N = 7, Rows = 256;
        int[] shape = inputAxis == 1 ? [N, K] : [K, N];
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(8, symmetric).WithGranularity(QuantizationGranularity.PerGroup(8, inputAxis == 1 ? -1 : 0));
        Random random = new(3);
        float[] x = GptqTestData.CorrelatedInputs(random, Rows, K, GptqTestData.Mixing(random, K));
        float[] weight = GptqTestData.Gaussian(random, K * N);
        HessianAccumulator hessian = new(K);
        hessian.Add(x, [Rows, K]);

        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme);
        QuantizedTensor gptq = GptqQuantizer.Quantize(weight, shape, scheme, hessian, new GptqOptions { ActivationOrder = true });
        Assert.Equal(231, gptq.ElementCount);
        Assert.Equal(116, gptq.Data.Length);
        Assert.Equal(0, gptq.Data[^1] >> 4);
        Assert.Equal(inputAxis == 1 ? [N, 5] : [5, N], scheme.Granularity.GetParameterShape(shape));
        Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
        Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());

        int[] codes = GptqTestData.Integers(gptq);
        float[] dequantized = gptq.Dequantize();
        for (int i = 0; i < codes.Length; i++)
        {
            int input = inputAxis == 1 ? i % K : i / N, output = inputAxis == 1 ? i / K : i % N;
            int p = inputAxis == 1 ? (output * 5) + (input / 8) : ((input / 8) * N) + output;
            Assert.InRange(codes[i], scheme.QuantMin, scheme.QuantMax);
            Assert.Equal(ScalarReference.Dequantize(codes[i], gptq.Parameters.Scales[p], gptq.Parameters.ZeroPoints[p]), dequantized[i]);
        }

        QuantizedTensor reread = new(gptq.Data, shape, scheme, gptq.Parameters);
        Assert.Equal(dequantized, reread.Dequantize());
        Assert.True(GptqTestData.OutputError(x, Rows, weight, dequantized, shape, inputAxis) < GptqTestData.OutputError(x, Rows, weight, rtn.Dequantize(), shape, inputAxis));
    }

    /// <summary>
    /// Zero-range groups (all zero, or one value) keep RTN's parameters (zero is always in range; an all-zero group gets
    /// the convention's scale for an empty range) and take compensation like any group: codes stay in range, values finite.
    /// With a diagonal Hessian nothing is compensated and an all-zero group stays at its zero point.
    /// </summary>
    [Theory]
    [InlineData("int4")]
    [InlineData("uint4")]
    [InlineData("int8")]
    public void Quantize_WithZeroRangeGroups_KeepsRtnsParameters(string type)
    {
        const int K = 64, N = 16, Rows = 512, G = 16;
        QuantizationScheme scheme = type switch
        {
            "int4" => QuantizationScheme.Int4PerGroup(G),
            "uint4" => QuantizationScheme.Int4PerGroup(G, symmetric: false),
            _ => QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(G)),
        };
        Random random = new(9);
        float[] x = GptqTestData.CorrelatedInputs(random, Rows, K, GptqTestData.Mixing(random, K));
        float[] weight = GptqTestData.Gaussian(random, K * N);
        for (int o = 0; o < N; o++)
        {
            weight.AsSpan((o * K) + G, G).Clear();
            weight.AsSpan((o * K) + (2 * G), G).Fill(o % 2 == 0 ? 0.5f : -0.75f);
        }

        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, [N, K], scheme);
        HessianAccumulator correlated = new(K);
        correlated.Add(x, [Rows, K]);
        QuantizedTensor gptq = GptqQuantizer.Quantize(weight, [N, K], scheme, correlated);
        Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
        Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());
        Assert.All(GptqTestData.Integers(gptq), q => Assert.InRange(q, scheme.QuantMin, scheme.QuantMax));
        Assert.All(gptq.Dequantize(), v => Assert.True(float.IsFinite(v)));
        Assert.True(GptqTestData.OutputError(x, Rows, weight, gptq.Dequantize(), [N, K], 1) < GptqTestData.OutputError(x, Rows, weight, rtn.Dequantize(), [N, K], 1));

        HessianAccumulator diagonal = new(K);
        diagonal.Add(GptqTestData.UncorrelatedInputs(K), [K, K]);
        QuantizedTensor uncompensated = GptqQuantizer.Quantize(weight, [N, K], scheme, diagonal);
        Assert.Equal(rtn.Data.ToArray(), uncompensated.Data.ToArray());
        float[] values = uncompensated.Dequantize();
        for (int o = 0; o < N; o++)
        {
            Assert.All(values.AsSpan((o * K) + G, G).ToArray(), v => Assert.Equal(0f, v));
        }
    }

    /// <summary>
    /// Dead inputs are fixed (H_ii = 1, weight zeroed) before the dampening 0.01 × mean(diag H) is taken: with small
    /// activations and one dead input the fix dominates the mean, so the order shows in the integers.
    /// </summary>
    [Fact]
    public void Quantize_FixesDeadInputsBeforeTakingTheDampeningFromTheDiagonal()
    {
        const int K = 48, N = 32, Rows = 400;
        Random random = new(21);
        float[] x = [.. GptqTestData.CorrelatedInputs(random, Rows, K, GptqTestData.Mixing(random, K)).Select(v => v * 1e-3f)];
        for (int r = 0; r < Rows; r++)
        {
            x[(r * K) + 5] = 0;
        }

        float[] weight = GptqTestData.Gaussian(random, K * N);
        HessianAccumulator hessian = new(K);
        hessian.Add(x, [Rows, K]);
        QuantizationScheme scheme = QuantizationScheme.Int8PerChannel(0);

        int[] actual = GptqTestData.Integers(GptqQuantizer.Quantize(weight, [N, K], scheme, hessian));
        int[] fixThenDampen = ReferenceGptq(weight, N, K, scheme, hessian.ToMatrix(), activationOrder: false);
        int[] dampenThenFix = ReferenceGptq(weight, N, K, scheme, hessian.ToMatrix(), activationOrder: false, dampenBeforeDeadFix: true);
        int same = actual.Zip(fixThenDampen).Count(p => p.First == p.Second);
        int other = actual.Zip(dampenThenFix).Count(p => p.First == p.Second);
        output.WriteLine($"equal integers: {same} with the fix first, {other} with the dampening first, of {actual.Length}");
        Assert.True(same >= actual.Length * 0.99, $"{same} of {actual.Length}");
        Assert.True(other <= actual.Length * 0.95, $"{other} of {actual.Length}");
    }

    /// <summary>
    /// Property over shapes, layouts, types, group sizes (dividing K or not), orders and block sizes: with a diagonal Hessian
    /// GPTQ is RTN bit for bit; with a correlated one it keeps RTN's parameters and its values stay on RTN's grid.
    /// </summary>
    [Fact]
    public void Quantize_AnyGroupLayout_DiagonalHessianGivesRtn_CorrelatedKeepsRtnsGrid()
    {
        Gen.Select(Gen.Int[1, 40], Gen.Int[1, 12], Gen.Int[1, 44], Gen.Int[0, 3], Gen.Bool, Gen.Bool, Gen.Int[1, 16], Gen.UInt).Sample(
            (k, n, groupSize, type, kFirst, activationOrder, blockSize, seed) =>
            {
                int[] shape = kFirst ? [k, n] : [n, k];
                QuantizedType quantizedType = (QuantizedType)type;
                QuantizationScheme scheme = new(quantizedType, symmetric: quantizedType.IsSigned(), QuantizationGranularity.PerGroup(groupSize, kFirst ? 0 : 1));
                Random random = new((int)seed);
                float[] weight = GptqTestData.Gaussian(random, k * n);
                GptqOptions options = new() { ActivationOrder = activationOrder, BlockSize = blockSize };
                QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme);

                double[] diagonal = new double[k * k];
                for (int i = 0; i < k; i++)
                {
                    diagonal[(i * k) + i] = 0.1 + random.NextDouble();
                }

                Assert.Equal(rtn.Data.ToArray(), GptqQuantizer.Quantize(weight, shape, scheme, diagonal, k, options, null, default).Data.ToArray());

                HessianAccumulator correlated = new(k);
                correlated.Add(GptqTestData.CorrelatedInputs(random, 2 * k, k, GptqTestData.Mixing(random, k)), [2 * k, k]);
                QuantizedTensor gptq = GptqQuantizer.Quantize(weight, shape, scheme, correlated, options);
                Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
                Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());
                Assert.Equal(gptq.Data.ToArray(), QuantizedTensor.Quantize(gptq.Dequantize(), shape, scheme, gptq.Parameters).Data.ToArray());
            },
            iter: 150);
    }

    [Fact]
    public void Quantize_OnUInt8Asymmetric_KeepsRtnParametersAndCutsTheError()
    {
        const int K = 64, N = 32, Rows = 512;
        QuantizationScheme scheme = new(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(0));
        Random random = new(5);
        float[] x = GptqTestData.CorrelatedInputs(random, Rows, K, GptqTestData.Mixing(random, K));
        float[] weight = [.. GptqTestData.Gaussian(random, K * N).Select(v => v + 0.3f)];
        HessianAccumulator hessian = new(K);
        hessian.Add(x, [Rows, K]);

        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, [N, K], scheme);
        QuantizedTensor gptq = GptqQuantizer.Quantize(weight, [N, K], scheme, hessian);
        Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
        Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());
        Assert.Contains(gptq.Parameters.ZeroPoints.ToArray(), zp => zp != 128);
        double ratio = GptqTestData.OutputError(x, Rows, weight, gptq.Dequantize(), [N, K], 1) / GptqTestData.OutputError(x, Rows, weight, rtn.Dequantize(), [N, K], 1);
        output.WriteLine(FormattableString.Invariant($"uint8 asymmetric per channel: GPTQ / RTN output error {ratio:F3}"));
        Assert.True(ratio <= 0.8, $"ratio {ratio}");
    }

    /// <summary>
    /// Inputs whose Hessian is diagonal (<see cref="GptqTestData.UncorrelatedInputs"/>): no error can be compensated, so GPTQ
    /// must give RTN's integers bit for bit, in any order and block size, per group too (partial last group included).
    /// </summary>
    [Theory]
    [InlineData("axis0 [N,K]")]
    [InlineData("axis1 [K,N]")]
    [InlineData("per-tensor [N,K]")]
    [InlineData("per-tensor [K,N]")]
    [InlineData("uint8 asymmetric")]
    [InlineData("torch")]
    [InlineData("ggml per-channel")]
    [InlineData("group 16 [N,K]")]
    [InlineData("group 16 [K,N] uint8")]
    [InlineData("int4 group 16 [N,K]")]
    [InlineData("uint4 group 24 [K,N]")]
    [InlineData("int4 restricted per-channel")]
    public void Quantize_WithUncorrelatedInputs_EqualsRtnBitForBit(string layout)
    {
        const int K = 64, N = 24;
        (int[] shape, QuantizationScheme scheme, GptqOptions options, _) = Setup(layout, K, N);
        float[] x = GptqTestData.UncorrelatedInputs(K);
        HessianAccumulator hessian = new(K);
        hessian.Add(x, [K, K]);
        double[] h = hessian.ToMatrix();
        for (int i = 0; i < K; i++)
        {
            for (int j = 0; j < K; j++)
            {
                Assert.True(i == j ? h[(i * K) + j] > 0 : h[(i * K) + j] == 0);
            }
        }

        float[] weight = [.. Floats.Array(K * N, 17).Select(v => Math.Clamp(v, -400f, 400f))];
        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme);
        foreach ((bool activationOrder, int blockSize) in new[] { (false, 128), (true, 128), (false, 1), (true, 7) })
        {
            options.ActivationOrder = activationOrder;
            options.BlockSize = blockSize;
            QuantizedTensor gptq = GptqQuantizer.Quantize(weight, shape, scheme, hessian, options);
            Assert.Equal(rtn.Data.ToArray(), gptq.Data.ToArray());
            Assert.Equal(rtn.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
            Assert.Equal(rtn.Dequantize(), gptq.Dequantize());
        }
    }

    /// <summary>
    /// The blocked Cholesky form against the paper's unblocked form with an explicitly updated inverse Hessian
    /// (H⁻¹ ← H⁻¹ − H⁻¹:,j H⁻¹j,: / H⁻¹jj): the same algorithm, so the integers agree except where summation order
    /// flips a near tie.
    /// </summary>
    [Theory]
    [InlineData(false, 128)]
    [InlineData(false, 5)]
    [InlineData(true, 16)]
    public void Quantize_AgreesWithTheUnblockedInverseHessianForm(bool activationOrder, int blockSize)
    {
        const int K = 48, N = 40, Rows = 400;
        Random random = new(11);
        float[] x = GptqTestData.CorrelatedInputs(random, Rows, K, GptqTestData.Mixing(random, K));
        for (int r = 0; r < Rows; r++)
        {
            x[(r * K) + 7] = 0; // a dead input
        }

        float[] weight = GptqTestData.Gaussian(random, K * N);
        HessianAccumulator hessian = new(K);
        hessian.Add(x, [Rows, K]);
        QuantizationScheme scheme = QuantizationScheme.Int8PerChannel(0);
        GptqOptions options = new() { ActivationOrder = activationOrder, BlockSize = blockSize };

        int[] actual = GptqTestData.Integers(GptqQuantizer.Quantize(weight, [N, K], scheme, hessian, options));
        int[] expected = ReferenceGptq(weight, N, K, scheme, hessian.ToMatrix(), activationOrder);
        int same = actual.Zip(expected).Count(p => p.First == p.Second);
        output.WriteLine($"{same} of {actual.Length} integers equal the unblocked form's");
        Assert.All(actual.Zip(expected), p => Assert.InRange(p.First - p.Second, -1, 1));
        Assert.True(same >= actual.Length * 0.99, $"{same} of {actual.Length}");
        for (int o = 0; o < N; o++)
        {
            Assert.Equal(0, actual[(o * K) + 7]);
        }
    }

    [Theory]
    [InlineData("axis1 [K,N] uint8")]
    [InlineData("group 4 [N,K]")]
    [InlineData("group 4 [K,N]")]
    public void Quantize_WithNoCalibrationRows_FallsBackToRtn_AndWithAllZeroInputs_ZeroesEveryWeight(string layout)
    {
        const int K = 8, N = 6;
        (int[] shape, QuantizationScheme scheme, GptqOptions options, _) = Setup(layout, K, N);
        float[] weight = GptqTestData.Gaussian(new Random(2), K * N);
        QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme, "w");

        // No rows: the Hessian carries no information, so the result is RTN's (what the ONNX quantizer does for such a layer).
        HessianAccumulator empty = new(K);
        QuantizedTensor fallback = GptqQuantizer.Quantize(weight, shape, scheme, empty, options, "w");
        Assert.Equal(rtn.Data.ToArray(), fallback.Data.ToArray());
        Assert.Equal(rtn.Parameters.Scales.ToArray(), fallback.Parameters.Scales.ToArray());
        Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), fallback.Parameters.ZeroPoints.ToArray());
        Assert.Equal("w", fallback.Name);

        // Rows that are all zero: every input is dead (H_ii = 0), so every weight is zeroed, as in the reference.
        HessianAccumulator zeros = new(K);
        zeros.Add(new float[3 * K], [3, K]);
        QuantizedTensor dead = GptqQuantizer.Quantize(weight, shape, scheme, zeros, options, "w");
        Assert.Equal(rtn.Parameters.Scales.ToArray(), dead.Parameters.Scales.ToArray());
        Assert.All(dead.Dequantize(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Quantize_RaisesDampeningForAnIndefiniteHessian_ThenThrowsNamingTheTensor()
    {
        float[] weight = [0.5f, -0.25f, 1f, 0.75f];
        QuantizationScheme scheme = QuantizationScheme.Int8PerChannel();

        // Eigenvalues 11 and -9: positive definite only from dampening 10 × mean(diag) on (the third retry).
        QuantizedTensor recovered = GptqQuantizer.Quantize(weight, [2, 2], scheme, [1, 10, 10, 1], 2, null, "w", default);
        Assert.Equal(4, recovered.ElementCount);

        InvalidOperationException error = Assert.Throws<InvalidOperationException>(() =>
            GptqQuantizer.Quantize(weight, [2, 2], scheme, [1, 1000, 1000, 1], 2, null, "blocks.0.fc1", default));
        Assert.Contains("'blocks.0.fc1'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TryInverseUpperFactor_GivesUpperTriangularUWithUTransposeUTimesHEqualToIdentity()
    {
        const int K = 37;
        Random random = new(8);
        float[] x = GptqTestData.CorrelatedInputs(random, 200, K, GptqTestData.Mixing(random, K));
        HessianAccumulator accumulator = new(K);
        accumulator.Add(x, [200, K]);
        double[] h = accumulator.ToMatrix();
        double[] u = new double[K * K];
        Assert.True(GptqQuantizer.TryInverseUpperFactor((double[])h.Clone(), K, u));
        for (int i = 0; i < K; i++)
        {
            Assert.True(u[(i * K) + i] > 0);
            for (int j = 0; j < i; j++)
            {
                Assert.Equal(0, u[(i * K) + j]);
            }
        }

        // (UᵀU) H = I.
        for (int i = 0; i < K; i++)
        {
            for (int j = 0; j < K; j++)
            {
                double s = 0;
                for (int t = 0; t < K; t++)
                {
                    double inverse = 0;
                    for (int m = 0; m <= Math.Min(i, t); m++)
                    {
                        inverse += u[(m * K) + i] * u[(m * K) + t];
                    }

                    s += inverse * h[(t * K) + j];
                }

                Assert.Equal(i == j ? 1 : 0, s, 1e-9);
            }
        }

        Assert.False(GptqQuantizer.TryInverseUpperFactor([1, 2, 2, 1], 2, new double[4]));
        Assert.False(GptqQuantizer.TryInverseUpperFactor([0, 0, 0, 1], 2, new double[4]));
    }

    [Fact]
    public void Quantize_RejectsBadArguments_NamingTheTensor()
    {
        float[] weight = new float[6 * 4];
        HessianAccumulator four = new(4);
        four.Add(GptqTestData.Gaussian(new Random(1), 40), [10, 4]);
        QuantizationScheme scheme = QuantizationScheme.Int8PerChannel();

        ArgumentException wrongK = Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [4, 6], scheme, four, name: "fc2"));
        Assert.Contains("'fc2'", wrongK.Message, StringComparison.Ordinal);
        Assert.Equal("hessian", wrongK.ParamName);
        ArgumentException rank = Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [2, 3, 4], scheme, four, name: "fc2"));
        Assert.Contains("'fc2'", rank.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [24], scheme, four));
        ArgumentException groupAxis = Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme.WithGranularity(QuantizationGranularity.PerGroup(2, 0)), four, new GptqOptions { InputAxis = 1 }, "fc2"));
        Assert.Contains("'fc2'", groupAxis.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme.WithGranularity(QuantizationGranularity.PerGroup(2, 0)), four));
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme.WithGranularity(QuantizationGranularity.PerGroup(2, 2)), four));
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme.WithGranularity(QuantizationGranularity.PerToken), four));
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], QuantizationScheme.Int8PerChannel(2), four));
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme, four, new GptqOptions { InputAxis = 0 }));
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight.AsSpan(1), [6, 4], scheme, four));
        Assert.Throws<ArgumentNullException>(() => GptqQuantizer.Quantize(weight, [6, 4], null!, four));
        Assert.Throws<ArgumentNullException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme, null!));

        // Per tensor with InputAxis 0 reads [K, N]: K = 6 here.
        Assert.Throws<ArgumentException>(() => GptqQuantizer.Quantize(weight, [6, 4], QuantizationScheme.Int8PerTensor(), four, new GptqOptions { InputAxis = 0 }));
        Assert.Equal(24, GptqQuantizer.Quantize(weight, [4, 6], QuantizationScheme.Int8PerTensor(), four, new GptqOptions { InputAxis = -2 }).ElementCount);

        weight[9] = float.NaN;
        NonFiniteValueException nan = Assert.Throws<NonFiniteValueException>(() => GptqQuantizer.Quantize(weight, [6, 4], scheme, four, name: "fc2"));
        Assert.Equal("fc2", nan.TensorName);
        Assert.Equal(9, nan.Index);
    }

    [Fact]
    public void Quantize_ObservesCancellation()
    {
        HessianAccumulator hessian = new(16);
        hessian.Add(GptqTestData.Gaussian(new Random(1), 16 * 32), [32, 16]);
        using CancellationTokenSource cancelled = new();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() =>
            GptqQuantizer.Quantize(new float[8 * 16], [8, 16], QuantizationScheme.Int8PerChannel(), hessian, cancellationToken: cancelled.Token));
    }

    [Fact]
    public void Options_ValidateTheirValues()
    {
        GptqOptions options = new();
        Assert.Equal(0.01, options.DampeningFraction);
        Assert.Equal(128, options.BlockSize);
        Assert.False(options.ActivationOrder);
        Assert.Null(options.InputAxis);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.DampeningFraction = 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.DampeningFraction = -0.1);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.DampeningFraction = double.NaN);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.DampeningFraction = double.PositiveInfinity);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.BlockSize = 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.InputAxis = 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.InputAxis = -3);
        options.InputAxis = -1;
        Assert.Equal(-1, options.InputAxis);
    }

    private static (int[] Shape, QuantizationScheme Scheme, GptqOptions Options, int InputAxis) Setup(string layout, int k, int n) => layout switch
    {
        "axis0 [N,K]" => ([n, k], QuantizationScheme.Int8PerChannel(0), new GptqOptions(), 1),
        "axis1 [K,N]" => ([k, n], QuantizationScheme.Int8PerChannel(1), new GptqOptions(), 0),
        "per-tensor [N,K]" => ([n, k], QuantizationScheme.Int8PerTensor(), new GptqOptions(), 1),
        "per-tensor [K,N]" => ([k, n], QuantizationScheme.Int8PerTensor(), new GptqOptions { InputAxis = 0 }, 0),
        "uint8 asymmetric" => ([k, n], new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(-1)), new GptqOptions(), 0),
        "torch" => ([n, k], new QuantizationScheme(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerChannel(0), NumericConvention.Torch), new GptqOptions(), 1),
        "group 4 [N,K]" => ([n, k], QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(4)), new GptqOptions(), 1),
        "group 4 [K,N]" => ([k, n], new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerGroup(4, 0)), new GptqOptions(), 0),
        "group 16 [N,K]" => ([n, k], QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(16)), new GptqOptions(), 1),
        "group 16 [K,N] uint8" => ([k, n], new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerGroup(16, 0)), new GptqOptions(), 0),
        "axis1 [K,N] uint8" => ([k, n], new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(1)), new GptqOptions(), 0),
        "int4 group 16 [N,K]" => ([n, k], QuantizationScheme.Int4PerGroup(16), new GptqOptions(), 1),
        "uint4 group 24 [K,N]" => ([k, n], QuantizationScheme.Int4PerGroup(24, symmetric: false).WithGranularity(QuantizationGranularity.PerGroup(24, 0)), new GptqOptions(), 0),
        "int4 restricted per-channel" => ([n, k], new QuantizationScheme(QuantizedType.Int4, symmetric: true, QuantizationGranularity.PerChannel(0), range: QuantizationRange.Restricted), new GptqOptions(), 1),
        "ggml per-channel" => ([n, k], new QuantizationScheme(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerChannel(0), NumericConvention.GgmlQ8_0), new GptqOptions(), 1),
        _ => throw new ArgumentOutOfRangeException(nameof(layout)),
    };

    /// <summary>
    /// The paper's unblocked form on an [N, K] weight with ONNX arithmetic: quantize column j, subtract
    /// (w − ŵ) / H⁻¹jj × H⁻¹j,k from every later column k, then remove j from H⁻¹ by one step of Gaussian elimination.
    /// </summary>
    private static int[] ReferenceGptq(float[] weight, int n, int k, QuantizationScheme scheme, double[] h, bool activationOrder, bool dampenBeforeDeadFix = false)
    {
        double dampBeforeFix = 0.01 * Enumerable.Range(0, k).Average(i => h[(i * k) + i]);
        QuantizationParameters parameters = QuantizedTensor.Quantize(weight, [n, k], scheme).Parameters;
        double[,] w = new double[n, k];
        for (int o = 0; o < n; o++)
        {
            for (int i = 0; i < k; i++)
            {
                w[o, i] = weight[(o * k) + i];
            }
        }

        for (int i = 0; i < k; i++)
        {
            if (h[(i * k) + i] == 0)
            {
                h[(i * k) + i] = 1;
                for (int o = 0; o < n; o++)
                {
                    w[o, i] = 0;
                }
            }
        }

        int[] order = [.. Enumerable.Range(0, k).OrderByDescending(i => activationOrder ? h[(i * k) + i] : 0)];
        double damp = dampenBeforeDeadFix ? dampBeforeFix : 0.01 * Enumerable.Range(0, k).Average(i => h[(i * k) + i]);
        double[,] inverse = Invert(k, (a, b) => h[(order[a] * k) + order[b]] + (a == b ? damp : 0));
        int[] result = new int[n * k];
        for (int j = 0; j < k; j++)
        {
            int column = order[j];
            for (int o = 0; o < n; o++)
            {
                float scale = parameters.Scales[o];
                int q = ScalarReference.Quantize((float)w[o, column], scale, 0, scheme.QuantMin, scheme.QuantMax, scheme.Convention);
                result[(o * k) + column] = q;
                double error = (w[o, column] - ScalarReference.Dequantize(q, scale, 0)) / inverse[j, j];
                for (int t = j + 1; t < k; t++)
                {
                    w[o, order[t]] -= error * inverse[j, t];
                }
            }

            for (int a = j + 1; a < k; a++)
            {
                for (int b = j + 1; b < k; b++)
                {
                    inverse[a, b] -= inverse[a, j] * inverse[j, b] / inverse[j, j];
                }
            }
        }

        return result;
    }

    /// <summary>Gauss-Jordan inversion with partial pivoting.</summary>
    private static double[,] Invert(int k, Func<int, int, double> entry)
    {
        double[,] a = new double[k, 2 * k];
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j < k; j++)
            {
                a[i, j] = entry(i, j);
            }

            a[i, k + i] = 1;
        }

        for (int c = 0; c < k; c++)
        {
            int pivot = Enumerable.Range(c, k - c).MaxBy(r => Math.Abs(a[r, c]));
            for (int j = 0; j < 2 * k; j++)
            {
                (a[c, j], a[pivot, j]) = (a[pivot, j], a[c, j]);
            }

            double p = a[c, c];
            for (int j = 0; j < 2 * k; j++)
            {
                a[c, j] /= p;
            }

            for (int r = 0; r < k; r++)
            {
                if (r != c && a[r, c] != 0)
                {
                    double f = a[r, c];
                    for (int j = 0; j < 2 * k; j++)
                    {
                        a[r, j] -= f * a[c, j];
                    }
                }
            }
        }

        double[,] inverse = new double[k, k];
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j < k; j++)
            {
                inverse[i, j] = a[i, k + j];
            }
        }

        return inverse;
    }
}
