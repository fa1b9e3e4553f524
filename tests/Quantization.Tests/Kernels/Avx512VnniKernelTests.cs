namespace Quantization.Tests.Kernels;

/// <summary>
/// The run-time assembled AVX-512 VNNI kernel: its bytes against GNU as (on any machine), and its sums against the scalar
/// specification for every tile size and step count (where the CPU runs it; <see cref="LinearKernelTests"/> covers it as
/// one of the paths too).
/// </summary>
public class Avx512VnniKernelTests
{
    [Theory]
    [InlineData(1, 1, "avx512-vnni-kernel-1-token.hex")]
    [InlineData(8, 1, "avx512-vnni-kernel-8-tokens.hex")]
    [InlineData(4, 2, "avx512-vnni-kernel-4-tokens-2-panels.hex")]
    public void Assemble_GivesTheBytesOfGnuAs(int tokens, int panels, string golden)
    {
        string hex = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Kernels", "Data", golden)).Trim();
        Assert.Equal(hex, Convert.ToHexStringLower(Avx512VnniKernel.Assemble(tokens, panels)));
    }

    [Avx512VnniTheory]
    [InlineData(1)]
    [InlineData(2)]
    public unsafe void Accumulate_EveryTileAndStepCount_EqualsScalarDotsAndAddsToTheSums(int panels)
    {
        Random random = new(11 * panels);
        foreach (int inFeatures in new[] { 4, 8, 12, 40, 516 })
        {
            // Three panels: the pair is the first and the last, 2 panels apart.
            int outFeatures = 3 * PackedInt8Weight.PanelRows;
            sbyte[] weight = RandomBytes(random, outFeatures * inFeatures);
            weight[0] = sbyte.MinValue;
            weight[1] = sbyte.MaxValue;
            PackedInt8Weight packed = new(weight, outFeatures, inFeatures);
            int[] panelIndices = panels == 1 ? [0] : [0, 2];
            for (int tokens = 1; tokens <= (panels == 1 ? Avx512VnniKernel.MaxTokens : Avx512VnniKernel.MaxPairedTokens); tokens++)
            {
                sbyte[] x = RandomBytes(random, tokens * inFeatures);
                x[0] = sbyte.MinValue;
                byte[] prepared = new byte[x.Length];
                Int8PanelKernel.PrepareActivations(Int8KernelPath.Avx512Vnni, x, prepared);
                int[] sums = Enumerable.Range(0, panels * tokens * PackedInt8Weight.PanelRows).ToArray();
                fixed (sbyte* first = &packed.GetPanel(0))
                fixed (sbyte* last = &packed.GetPanel(2))
                fixed (byte* a = prepared)
                fixed (int* s = sums)
                {
                    Avx512VnniKernel.Accumulate(first, panels == 1 ? 0 : (nint)(last - first), a, inFeatures, packed.Steps, tokens, s);
                }

                for (int j = 0; j < panels; j++)
                {
                    for (int t = 0; t < tokens; t++)
                    {
                        for (int c = 0; c < PackedInt8Weight.PanelRows; c++)
                        {
                            // The kernel sums (x + 128) * w on top of what the sums held.
                            int n = (panelIndices[j] * PackedInt8Weight.PanelRows) + c;
                            int i = (((j * tokens) + t) * PackedInt8Weight.PanelRows) + c;
                            int expected = i + TestUtilities.ScalarReference.DotInt8(x.AsSpan(t * inFeatures, inFeatures), weight.AsSpan(n * inFeatures, inFeatures)) + packed.ActivationOffsets[n];
                            Assert.True(expected == sums[i], $"{inFeatures} features, {panels} panels, {tokens} tokens: token {t}, channel {n} summed {sums[i]}, expected {expected}");
                        }
                    }
                }
            }
        }
    }

    private static sbyte[] RandomBytes(Random random, int length)
    {
        sbyte[] values = new sbyte[length];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    [Avx512VnniTheory]
    [InlineData(0, 1)]
    [InlineData(1, 0)]
    [InlineData(1, Avx512VnniKernel.MaxTokens + 1)]
    public unsafe void Accumulate_NoStepOrTooManyTokens_IsRefusedBeforeNativeCodeRuns(int steps, int tokens)
    {
        sbyte* weights = stackalloc sbyte[PackedInt8Weight.StepBytes];
        byte* activations = stackalloc byte[PackedInt8Weight.StepFeatures * (Avx512VnniKernel.MaxTokens + 1)];
        int* sums = stackalloc int[PackedInt8Weight.PanelRows * (Avx512VnniKernel.MaxTokens + 1)];
        nint w = (nint)weights, a = (nint)activations, s = (nint)sums;
        Assert.Throws<ArgumentOutOfRangeException>(() => Avx512VnniKernel.Accumulate((sbyte*)w, 0, (byte*)a, PackedInt8Weight.StepFeatures, steps, tokens, (int*)s));
    }

    [Avx512VnniTheory]
    [InlineData(1)]
    [InlineData(4)]
    public void AccumulatePair_ActivationsShorterThanTheTokens_IsRefusedBeforeNativeCodeRuns(int tokens)
    {
        PackedInt8Weight packed = new(new sbyte[2 * PackedInt8Weight.PanelRows * 8], 2 * PackedInt8Weight.PanelRows, 8);
        byte[] activations = new byte[(tokens * packed.PaddedInFeatures) - 1];
        int[] sums = new int[2 * tokens * PackedInt8Weight.PanelRows];
        Assert.Throws<ArgumentException>(() => Int8PanelKernel.AccumulatePair(packed, 0, 1, activations, tokens, sums));
    }

    /// <summary>A theory that runs where the AVX-512 VNNI kernels do, and is reported as skipped elsewhere.</summary>
    private sealed class Avx512VnniTheoryAttribute : TheoryAttribute
    {
        public Avx512VnniTheoryAttribute()
        {
            if (!Avx512VnniKernel.IsSupported)
            {
                Skip = "The AVX-512 VNNI kernels do not run on this machine or process.";
            }
        }
    }
}
